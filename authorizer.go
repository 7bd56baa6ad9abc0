package main

import (
	"github.com/rs/zerolog"

	"pgsse/auth"
	"pgsse/stream"
)

var _ stream.Authorizer = (*auth.Verifier)(nil)

// newAuthorizer returns the JWT verifier (as the authorizer and, for its key
// reloading, itself), or nothing at all with PGSSE_AUTH_MODE=none.
func newAuthorizer(cfg config, log zerolog.Logger) (stream.Authorizer, *auth.Verifier, error) {
	if cfg.AuthMode == "none" {
		log.Warn().Msg("PGSSE_AUTH_MODE=none: anyone who can reach pgsse can watch every video. Local development only; never in production")
		return nil, nil, nil
	}
	v, err := auth.New(auth.Config{
		Secret:      []byte(cfg.JWTSecret),
		KeyFile:     cfg.JWTKeyFile,
		Issuer:      cfg.JWTIssuer,
		Audience:    cfg.JWTAudience,
		TopicsClaim: cfg.JWTTopicsClaim,
		Cookie:      cfg.JWTCookie,
		AllowQuery:  cfg.AllowQuery,
		Leeway:      cfg.JWTLeeway,
		Logger:      log,
	})
	if err != nil {
		return nil, nil, err
	}
	return v, v, nil
}

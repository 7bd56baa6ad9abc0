// Package auth decides who may stream which topics: it verifies the JWT a
// request carries (golang-jwt; HMAC secrets, or public keys from a PEM or JWKS
// file that is reloaded when it changes) and checks every requested topic
// against the topic patterns the token grants.
//
// Tokens come from the Authorization header, the token cookie, or (only when
// enabled) the access_token query parameter. No token, key or secret is ever
// written to a log or echoed in an error.
package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"pgsse/event"
	"pgsse/stream"
)

// MaxTokenLen bounds a token's size in bytes.
const MaxTokenLen = 8 << 10

// Config configures a Verifier. At least one of Secret and KeyFile is required.
type Config struct {
	Secret      []byte // HS256, HS384, HS512; at least 32 bytes
	KeyFile     string // PEM public keys or a JWKS: RS*, PS*, ES*, EdDSA
	Issuer      string // when set, iss must equal it
	Audience    string // when set, aud must contain it
	TopicsClaim string // dotted path of the topics claim; default DefaultTopicsClaim
	Cookie      string // token cookie name; default DefaultCookie
	AllowQuery  bool   // accept ?access_token= (it ends up in proxies' access logs)
	Leeway      time.Duration
	Logger      zerolog.Logger
}

// Verifier authenticates stream requests. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	keys   atomic.Pointer[keySet]
	parser *jwt.Parser
	claim  []string
	loaded os.FileInfo // the key file as last loaded; owned by Run
}

// The defaults of the Config fields left empty (and of the settings of the
// same names).
const (
	DefaultTopicsClaim = "pgsse.topics" // a dotted path into the claims
	DefaultCookie      = "pgsse_token"
)

// New checks cfg and loads the key file, if any.
func New(cfg Config) (*Verifier, error) {
	if len(cfg.Secret) == 0 && cfg.KeyFile == "" {
		return nil, errors.New("auth: no key: set PGSSE_JWT_SECRET or PGSSE_JWT_KEY_FILE")
	}
	if len(cfg.Secret) > 0 && len(cfg.Secret) < 32 {
		return nil, fmt.Errorf("auth: PGSSE_JWT_SECRET is %d bytes; HS256 needs at least 32 random bytes", len(cfg.Secret))
	}
	if len(cfg.Secret) > 0 {
		if why := weakSecret(cfg.Secret); why != "" {
			return nil, fmt.Errorf("auth: PGSSE_JWT_SECRET refused: %s; generate one, e.g. openssl rand -base64 48", why)
		}
	}
	if cfg.TopicsClaim == "" {
		cfg.TopicsClaim = DefaultTopicsClaim
	}
	if cfg.Cookie == "" {
		cfg.Cookie = DefaultCookie
	}
	v := &Verifier{cfg: cfg, claim: strings.Split(cfg.TopicsClaim, ".")}
	var methods []string
	if len(cfg.Secret) > 0 {
		methods = append(methods, "HS256", "HS384", "HS512")
	}
	if cfg.KeyFile != "" {
		ks, fi, err := loadKeyFile(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		v.keys.Store(ks)
		v.loaded = fi
		methods = append(methods, ks.methods...)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods), // never "none"; HMAC only with a secret
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// Run reloads the key file whenever it changes, until ctx ends. A file that no
// longer parses is logged and the previous keys stay in use.
//
// "Changes" includes being replaced by another file: Kubernetes updates a
// mounted Secret or ConfigMap by swapping a symlink to a new directory, and
// the new file's mtime need not differ (copies that keep it, coarse clocks).
func (v *Verifier) Run(ctx context.Context) error {
	if v.cfg.KeyFile == "" {
		return nil
	}
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fi, err := os.Stat(v.cfg.KeyFile) // follows the symlinks
		if err != nil || sameFile(fi, v.loaded) {
			continue
		}
		ks, loaded, err := loadKeyFile(v.cfg.KeyFile)
		if err != nil {
			v.cfg.Logger.Error().Err(err).Str("file", v.cfg.KeyFile).Msg("reload JWT keys; keeping the previous ones")
			v.loaded = fi
			continue
		}
		v.keys.Store(ks)
		v.loaded = loaded
		v.cfg.Logger.Info().Str("file", v.cfg.KeyFile).Int("keys", ks.count).Msg("JWT keys reloaded")
	}
}

// sameFile: the same inode, unmodified.
func sameFile(fi, loaded os.FileInfo) bool {
	return os.SameFile(fi, loaded) && fi.ModTime().Equal(loaded.ModTime()) && fi.Size() == loaded.Size()
}

// Authorize authenticates r and checks that its token grants every topic. The
// error is an *stream.RequestError: 401 when the token is missing or invalid, 403
// when it does not grant a topic (the body names those topics).
func (v *Verifier) Authorize(r *http.Request, topics []string) (stream.Access, error) {
	raw, param, rerr := v.token(r)
	if rerr != nil {
		return stream.Access{}, rerr
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(raw, claims, v.key); err != nil {
		return stream.Access{}, unauthorized(param, "invalid token: "+reason(err))
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil || !exp.After(time.Now()) {
		return stream.Access{}, unauthorized(param, "invalid token: token has expired")
	}
	grants, err := v.grants(claims)
	if err != nil {
		return stream.Access{}, unauthorized(param, "invalid token: "+err.Error())
	}
	var denied []string
	for _, t := range topics {
		if !covers(grants, t) {
			denied = append(denied, t)
		}
	}
	if len(denied) > 0 {
		return stream.Access{}, &stream.RequestError{Status: http.StatusForbidden, Param: "topic", Topics: denied,
			Reason: fmt.Sprintf("the token does not grant %s; its %s claim must list them or a pattern covering them", strings.Join(denied, ", "), v.cfg.TopicsClaim)}
	}
	sub, _ := claims.GetSubject()
	return stream.Access{Subject: sub, Expires: exp.Time}, nil
}

// token finds the request's token: the header, then the cookie, then the query.
func (v *Verifier) token(r *http.Request) (raw, param string, err error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", "", unauthorized("Authorization", "the Authorization header must be \"Bearer <token>\"")
		}
		raw, param = strings.TrimSpace(tok), "Authorization"
	} else if c, err := r.Cookie(v.cfg.Cookie); err == nil && c.Value != "" {
		raw, param = c.Value, v.cfg.Cookie
	} else if q, ok := r.URL.Query()["access_token"]; ok {
		if !v.cfg.AllowQuery {
			return "", "", unauthorized("access_token", "tokens in the URL are disabled: send an Authorization: Bearer header or the "+v.cfg.Cookie+" cookie")
		}
		if len(q) != 1 || q[0] == "" {
			return "", "", unauthorized("access_token", "give access_token exactly once")
		}
		raw, param = q[0], "access_token"
	} else {
		return "", "", unauthorized("token", "no token: send an Authorization: Bearer header or the "+v.cfg.Cookie+" cookie")
	}
	if len(raw) > MaxTokenLen {
		return "", "", unauthorized(param, fmt.Sprintf("the token is %d bytes, more than %d", len(raw), MaxTokenLen))
	}
	return raw, param, nil
}

func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Method.(*jwt.SigningMethodHMAC); ok {
		return v.cfg.Secret, nil // only reachable with a secret: HS* are valid methods only then
	}
	ks := v.keys.Load()
	if ks == nil {
		return nil, errors.New("no public key configured")
	}
	return ks.keyfunc(t)
}

// grants reads the topics claim: an array of topics or topic patterns.
func (v *Verifier) grants(claims jwt.MapClaims) ([]event.Topic, error) {
	var node any = map[string]any(claims)
	for _, name := range v.claim {
		m, ok := node.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("no %s claim", v.cfg.TopicsClaim)
		}
		if node, ok = m[name]; !ok {
			return nil, fmt.Errorf("no %s claim", v.cfg.TopicsClaim)
		}
	}
	list, ok := node.([]any)
	if !ok {
		return nil, fmt.Errorf("the %s claim must be an array of topics", v.cfg.TopicsClaim)
	}
	grants := make([]event.Topic, 0, len(list))
	for _, item := range list {
		s, ok := item.(string)
		if !ok {
			return nil, fmt.Errorf("the %s claim must be an array of topics", v.cfg.TopicsClaim)
		}
		t, err := event.ParseTopic(s)
		if err != nil {
			return nil, fmt.Errorf("the %s claim holds an invalid topic", v.cfg.TopicsClaim)
		}
		grants = append(grants, t)
	}
	return grants, nil
}

// covers reports whether a grant allows subscribing to topic, itself a topic or
// a pattern: videos/* covers videos/abc and videos/*; videos/abc covers only itself.
func covers(grants []event.Topic, topic string) bool {
	for _, g := range grants {
		if g.String() == topic || g.Matches(topic) {
			return true
		}
	}
	return false
}

func unauthorized(param, reason string) *stream.RequestError {
	return &stream.RequestError{Status: http.StatusUnauthorized, Param: param, Reason: reason}
}

// reason says what is wrong with a token without quoting it.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token is not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no exp claim"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer (iss)"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience (aud)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "signature does not verify"
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	default:
		return "token not accepted (algorithm or claims)"
	}
}

package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
)

// keySet is the public keys of one load of the key file.
type keySet struct {
	keyfunc jwt.Keyfunc
	methods []string // algorithms the keys can verify
	count   int
}

// loadKeyFile reads PEM public keys ("PUBLIC KEY" or "RSA PUBLIC KEY" blocks) or,
// when the file is JSON, a JWKS.
func loadKeyFile(path string) (*keySet, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: key file: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("auth: key file: %w", err)
	}
	var ks *keySet
	if trimmed := bytes.TrimSpace(b); len(trimmed) > 0 && trimmed[0] == '{' {
		ks, err = parseJWKS(trimmed)
	} else {
		ks, err = parsePEM(b)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("auth: key file %s: %w", path, err)
	}
	return ks, fi, nil
}

func parsePEM(b []byte) (*keySet, error) {
	var keys []jwt.VerificationKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		var key jwt.VerificationKey
		var err error
		switch block.Type {
		case "PUBLIC KEY":
			key, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			key, err = x509.ParsePKCS1PublicKey(block.Bytes)
		default:
			return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
		}
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key found")
	}
	methods, err := methodsFor(keys)
	if err != nil {
		return nil, err
	}
	set := jwt.VerificationKeySet{Keys: keys}
	return &keySet{
		keyfunc: func(*jwt.Token) (any, error) { return set, nil },
		methods: methods,
		count:   len(keys),
	}, nil
}

func parseJWKS(b []byte) (*keySet, error) {
	kf, err := keyfunc.NewJWKSetJSON(json.RawMessage(b))
	if err != nil {
		return nil, err
	}
	set, err := kf.VerificationKeySet(context.Background())
	if err != nil {
		return nil, err
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("the JWKS holds no key")
	}
	methods, err := methodsFor(set.Keys)
	if err != nil {
		return nil, err
	}
	return &keySet{keyfunc: kf.Keyfunc, methods: methods, count: len(set.Keys)}, nil
}

// methodsFor lists the algorithms the keys can verify; symmetric keys are
// refused (a shared secret belongs in PGSSE_JWT_SECRET, never beside public keys).
func methodsFor(keys []jwt.VerificationKey) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	add := func(ms ...string) {
		for _, m := range ms {
			if !seen[m] {
				seen[m] = true
				out = append(out, m)
			}
		}
	}
	for _, k := range keys {
		switch k := k.(type) {
		case *rsa.PublicKey:
			add("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
		case *ecdsa.PublicKey:
			switch k.Curve.Params().BitSize {
			case 256:
				add("ES256")
			case 384:
				add("ES384")
			case 521:
				add("ES512")
			}
		case ed25519.PublicKey:
			add("EdDSA")
		default:
			return nil, fmt.Errorf("unsupported key type %T (use RSA, ECDSA or Ed25519 public keys)", k)
		}
	}
	return out, nil
}

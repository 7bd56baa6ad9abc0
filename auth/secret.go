package auth

import (
	"fmt"
	"math"
	"strings"
)

// placeholders are what example secrets say instead of being secret; one in
// PGSSE_JWT_SECRET means a copied example, whose value is public.
var placeholders = []string{"change-me", "changeme", "change_me", "replace", "example", "placeholder", "your-secret", "yoursecret", "xxxxxxxx", "todo"}

// minSecretBits is the least randomness a secret must show: anything at or
// below it is a pattern, a word or a short random value (RFC 7518 asks HS256
// for a 256-bit key).
const minSecretBits = 128

// weakSecret says why secret would let others forge tokens, or "" when it
// looks random. The randomness is estimated from the secret's own byte
// frequencies (Shannon entropy × length): repeats and short alphabets show.
func weakSecret(secret []byte) string {
	lower := strings.ToLower(string(secret))
	for _, p := range placeholders {
		if strings.Contains(lower, p) { // never quoted back: it is part of the secret
			return "it holds a placeholder word (change-me, example, replace…): an example's value is public"
		}
	}
	if bits := estimatedBits(secret); bits <= minSecretBits {
		return fmt.Sprintf("it shows about %.0f bits of randomness, at most %d", bits, minSecretBits)
	}
	return ""
}

func estimatedBits(b []byte) float64 {
	var counts [256]int
	for _, c := range b {
		counts[c]++
	}
	var perByte float64
	for _, n := range counts {
		if n > 0 {
			p := float64(n) / float64(len(b))
			perByte -= p * math.Log2(p)
		}
	}
	return perByte * float64(len(b))
}

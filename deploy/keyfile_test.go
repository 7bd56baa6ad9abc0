package deploy_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"pgsse/internal/testbin"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	corev1 "k8s.io/api/core/v1"
)

// variant is what a user's overlay builds on: a base and components.
type variant struct {
	base       string
	components []string
}

func (v variant) String() string { return strings.Join(append([]string{v.base}, v.components...), "+") }

// variants are the combinations the README offers.
var variants = []variant{
	{"deploy/k8s", nil},
	{"deploy/gateway", nil},
	{"deploy/k8s", []string{"deploy/migrate-init"}},
	{"deploy/gateway", []string{"deploy/migrate-init"}},
}

// overlay writes a kustomization using the variant and more components, as a
// user's own overlay would, with extra YAML appended, and returns its
// directory.
func overlay(t *testing.T, v variant, components []string, extra string) string {
	t.Helper()
	dir := t.TempDir()
	rel := func(p string) string { // kustomize takes no absolute paths
		r, err := filepath.Rel(dir, filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	doc := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - " + rel(v.base) + "\ncomponents:\n"
	for _, c := range slices.Concat(v.components, components) {
		doc += "  - " + rel(c) + "\n"
	}
	doc += extra
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestKustomize_JWTKeyFile: the component mounts the key Secret as a
// directory (which the kubelet updates in place; a subPath would never
// change), points PGSSE_JWT_KEY_FILE into it and lets the pgsse Secret go
// without PGSSE_JWT_SECRET; it composes with every variant.
func TestKustomize_JWTKeyFile(t *testing.T) {
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			o := render(t, overlay(t, v, []string{"deploy/jwt-key-file"}, ""))
			keyFile := one(t, "ConfigMaps", o.configMaps).Data["PGSSE_JWT_KEY_FILE"]
			pod := one(t, "Deployments", o.deployments).Spec.Template.Spec
			c := one(t, "containers", pod.Containers)
			var vol *corev1.Volume
			for i := range pod.Volumes {
				if s := pod.Volumes[i].Secret; s != nil && s.SecretName == "pgsse-jwt-keys" && len(s.Items) == 0 {
					vol = &pod.Volumes[i]
				}
			}
			if vol == nil {
				t.Fatalf("no volume of the whole Secret pgsse-jwt-keys: %+v", pod.Volumes)
			}
			mounted := false
			for _, m := range c.VolumeMounts {
				if m.Name == vol.Name {
					mounted = m.MountPath == filepath.Dir(keyFile) && m.SubPath == "" && m.ReadOnly
				}
			}
			if !mounted || filepath.Base(keyFile) != "keys" {
				t.Errorf("PGSSE_JWT_KEY_FILE %q is not the key \"keys\" of a read-only directory mount: %+v", keyFile, c.VolumeMounts)
			}
			for _, e := range c.Env {
				if e.Name == "PGSSE_JWT_SECRET" && (e.ValueFrom.SecretKeyRef.Optional == nil || !*e.ValueFrom.SecretKeyRef.Optional) {
					t.Error("PGSSE_JWT_SECRET is still required")
				}
			}
		})
	}
}

// TestKeyFile_SecretRotation: pgsse started as the component configures it,
// with only a key file laid out as the kubelet mounts a Secret, accepts tokens
// of the key swapped in by a Secret update and refuses the key swapped out.
func TestKeyFile_SecretRotation(t *testing.T) {
	mount := t.TempDir()
	version := 0
	swap := func(pub ed25519.PublicKey) string {
		version++
		dir := "..2026_12_03_19_00_00.00" + string(rune('0'+version))
		if err := os.Mkdir(filepath.Join(mount, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKIXPublicKey(pub)
		if err := os.WriteFile(filepath.Join(mount, dir, "keys"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(dir, filepath.Join(mount, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	newKey := func() (ed25519.PublicKey, ed25519.PrivateKey) {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return pub, priv
	}
	oldPub, oldPriv := newKey()
	oldDir := swap(oldPub)
	if err := os.Symlink(filepath.Join("..data", "keys"), filepath.Join(mount, "keys")); err != nil {
		t.Fatal(err)
	}
	base := startBinary(t, testbin.Build(t), []string{"PGSSE_AUTH_MODE=jwt", "PGSSE_JWT_KEY_FILE=" + filepath.Join(mount, "keys")})

	status := func(priv ed25519.PrivateKey) int {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
			"exp": time.Now().Add(time.Hour).Unix(), "pgsse": map[string]any{"topics": []string{"videos/*"}},
		}).SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", base+"/videos/1/events", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := status(oldPriv); got != http.StatusOK {
		t.Fatalf("token of the mounted key: %d, want 200", got)
	}
	newPub, newPriv := newKey()
	swap(newPub)
	if err := os.RemoveAll(filepath.Join(mount, oldDir)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for status(newPriv) != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("the key swapped in is not accepted after 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := status(oldPriv); got != http.StatusUnauthorized {
		t.Errorf("token of the key swapped out: %d, want 401", got)
	}
}

package deploy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
)

// TestKustomize_Upgrade: every variant can be applied over its previous
// release. Two renders that differ only in the image tag, as two releases do,
// must agree on every field the API server refuses to change: a Job's pod
// template and selector, a Deployment's selector.
func TestKustomize_Upgrade(t *testing.T) {
	release := func(t *testing.T, v variant, tag string) *objects {
		return render(t, overlay(t, v, nil, fmt.Sprintf("images:\n  - name: ghcr.io/example/pgsse\n    newTag: %s\n", tag)))
	}
	for _, v := range variants {
		t.Run(v.String(), func(t *testing.T) {
			before, after := release(t, v, "v1.0.0"), release(t, v, "v1.1.0")
			pod := one(t, "Deployments", after.deployments).Spec.Template.Spec
			for _, c := range append(pod.InitContainers, pod.Containers...) {
				if c.Image != "ghcr.io/example/pgsse:v1.1.0" {
					t.Errorf("container %s runs %s: the release's image did not reach it", c.Name, c.Image)
				}
			}
			for _, a := range after.jobs {
				for _, b := range before.jobs {
					if a.Name == b.Name && (!equality.Semantic.DeepEqual(a.Spec.Template, b.Spec.Template) || !equality.Semantic.DeepEqual(a.Spec.Selector, b.Spec.Selector)) {
						t.Errorf("Job %s keeps its name but changes its template: the next release cannot be applied", a.Name)
					}
				}
			}
			for _, a := range after.deployments {
				for _, b := range before.deployments {
					if a.Name == b.Name && !equality.Semantic.DeepEqual(a.Spec.Selector, b.Spec.Selector) {
						t.Errorf("Deployment %s changes its selector", a.Name)
					}
				}
			}
		})
	}
}

// TestKustomize_SetImageNames: the README's kubectl set image names the
// containers the Deployment has: the server's in every variant, and the
// init container's where deploy/migrate-init adds it.
func TestKustomize_SetImageNames(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	server := regexp.MustCompile(`kubectl set image deployment/(\S+) (\w+)=`).FindSubmatch(readme)
	initc := regexp.MustCompile(`deploy/migrate-init, add (\w+)=`).FindSubmatch(readme)
	if server == nil || initc == nil {
		t.Fatal("the README's release steps no longer say kubectl set image for both containers")
	}
	for _, v := range variants {
		pod := one(t, "Deployments", render(t, overlay(t, v, nil, "")).deployments)
		if pod.Name != string(server[1]) || pod.Spec.Template.Spec.Containers[0].Name != string(server[2]) {
			t.Errorf("%s: the README sets deployment/%s container %s; the manifests have deployment/%s container %s",
				v, server[1], server[2], pod.Name, pod.Spec.Template.Spec.Containers[0].Name)
		}
		if len(v.components) > 0 && one(t, "init containers", pod.Spec.Template.Spec.InitContainers).Name != string(initc[1]) {
			t.Errorf("%s: the README names the init container %s", v, initc[1])
		}
	}
}

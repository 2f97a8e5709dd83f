package config

import "testing"

func FuzzLoad(f *testing.F) {
	f.Add([]byte(reviewsDR))
	f.Add([]byte(vsYAML("reviews", "90", "-10") + "---\n" + reviewsDR))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("apiVersion: [\n"))
	f.Add([]byte("kind: VirtualService\nmetadata: {name: x}\nspec: {http: [{route: [{destination: {host: a}, weigth: 1}]}]}\n"))
	f.Add([]byte("kind: WorkloadEntry\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: {ports: {a: 1}, address: x}\n"))
	f.Add([]byte("kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: {hosts: [a], http: [{timeout: 1h, match: [{headers: {a: {regex: '('}}}]}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewStore(testOptions())
		for range 2 { // the second load exercises last-good retention
			snap := s.Load(map[string][]byte{"f.yaml": data, "dr.yaml": []byte(reviewsDR)})
			for _, d := range snap.Diagnostics {
				if d.Message == "" || d.File == "" {
					t.Fatalf("incomplete diagnostic %+v", d)
				}
			}
		}
	})
}

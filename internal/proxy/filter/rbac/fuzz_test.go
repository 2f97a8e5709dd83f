package rbac

import "testing"

// FuzzURITemplate compiles arbitrary templates and matches arbitrary paths:
// templates come from config, paths from clients; neither may panic, and a
// template that compiles matches only paths that start with "/".
func FuzzURITemplate(f *testing.F) {
	f.Add("/api/*/info", "/api/v1/info")
	f.Add("/{a}/{b=**}", "/x/y/z")
	f.Add("/**", "")
	f.Add("/{x=a/*/b}/c", "/a/q/b/c?x")
	f.Fuzz(func(t *testing.T, tmpl, path string) {
		re, err := compileURITemplate(tmpl)
		if err != nil {
			return
		}
		if re.MatchString(trimQuery(path)) && (len(path) == 0 || path[0] != '/') {
			t.Fatalf("template %q matched %q", tmpl, path)
		}
	})
}

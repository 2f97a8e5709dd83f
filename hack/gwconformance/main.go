// Command gwconformance prints, as JSON, the HTTPRoute tests of the Gateway
// API conformance suite (sigs.k8s.io/gateway-api/conformance, the module
// directory given as its argument): each test's short name, manifests,
// the Gateways and routes it names, and its expected responses
// (http.ExpectedResponse literals of tests/httproute-*.go and of the
// GAMMA tests, tests/mesh/*.go, and grpc.ExpectedResponse literals of
// tests/grpcroute-*.go, evaluated).
// A test whose literals use what it cannot evaluate says why in
// "unsupported". e2e/testdata/gateway-api-conformance/cases.json is made
// from its output.
package main

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

var consts = map[string]any{
	"ns": "gateway-conformance-infra", "confsuite.InfrastructureNamespace": "gateway-conformance-infra",
	"confsuite.AppBackendNamespace": "gateway-conformance-app-backend", "confsuite.WebBackendNamespace": "gateway-conformance-web-backend",
	"confsuite.InfraBackendServiceNameV1": "infra-backend-v1", "confsuite.InfraBackendServiceNameV2": "infra-backend-v2",
	"confsuite.InfraBackendServiceNameV3": "infra-backend-v3", "suite.InfrastructureNamespace": "gateway-conformance-infra",
	"suite.MeshNamespace": "gateway-conformance-mesh", "suite.MeshConsumerNamespace": "gateway-conformance-mesh-consumer", "true": true, "false": false, "nil": nil,
	"codes.OK": 0, "codes.Unimplemented": 12,
	"http.MethodGet": "GET", "http.MethodPost": "POST", "http.MethodOptions": "OPTIONS", "http.MethodHead": "HEAD",
}

type evalErr string

func eval(e ast.Expr, locals map[string]any) any {
	switch x := e.(type) {
	case *ast.BasicLit:
		switch x.Kind {
		case token.STRING:
			s, err := strconv.Unquote(x.Value)
			if err != nil {
				panic(evalErr(err.Error()))
			}
			return s
		case token.INT:
			n, _ := strconv.Atoi(x.Value)
			return n
		}
	case *ast.Ident:
		if v, ok := locals[x.Name]; ok {
			return v
		}
		if v, ok := consts[x.Name]; ok {
			return v
		}
		panic(evalErr("ident " + x.Name))
	case *ast.SelectorExpr:
		name := fmt.Sprintf("%s.%s", x.X, x.Sel.Name)
		if v, ok := consts[name]; ok {
			return v
		}
		panic(evalErr("selector " + name))
	case *ast.UnaryExpr:
		if x.Op == token.AND {
			return eval(x.X, locals)
		}
	case *ast.CallExpr:
		if len(x.Args) == 1 {
			return eval(x.Args[0], locals)
		}
		panic(evalErr(fmt.Sprintf("call %T", x.Fun)))
	case *ast.CompositeLit:
		if x.Type == nil && len(x.Elts) > 0 {
			// An element of a slice or map literal, its type elided:
			// a list when its elements have no keys.
			if _, keyed := x.Elts[0].(*ast.KeyValueExpr); !keyed {
				var l []any
				for _, el := range x.Elts {
					l = append(l, eval(el, locals))
				}
				return l
			}
		}
		switch t := x.Type.(type) {
		case *ast.MapType:
			m := map[string]any{}
			for _, el := range x.Elts {
				kv := el.(*ast.KeyValueExpr)
				m[fmt.Sprint(eval(kv.Key, locals))] = eval(kv.Value, locals)
			}
			return m
		case *ast.ArrayType:
			var l []any
			for _, el := range x.Elts {
				l = append(l, eval(el, locals))
			}
			return l
		default:
			_ = t
			m := map[string]any{}
			for _, el := range x.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					// embedded struct literal without key (e.g. ExpectedRequest{Request: ...} uses key)
					panic(evalErr("positional element"))
				}
				m[kv.Key.(*ast.Ident).Name] = eval(kv.Value, locals)
			}
			return m
		}
	case *ast.ParenExpr:
		return eval(x.X, locals)
	}
	panic(evalErr(fmt.Sprintf("expr %T", e)))
}

type test struct {
	Name        string   `json:"name"`
	File        string   `json:"file"`
	Manifests   []string `json:"manifests"`
	Gateways    []string `json:"gateways"`
	Cases       []any    `json:"cases"`
	Unsupported string   `json:"unsupported,omitempty"`
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gwconformance <conformance module directory>")
		os.Exit(2)
	}
	dir := os.Args[1]
	files, _ := filepath.Glob(filepath.Join(dir, "tests", "httproute-*.go"))
	grpcs, _ := filepath.Glob(filepath.Join(dir, "tests", "grpcroute-*.go"))
	mesh, _ := filepath.Glob(filepath.Join(dir, "tests", "mesh", "*.go"))
	files = append(append(files, grpcs...), mesh...)
	sort.Strings(files)
	var out []test
	for _, f := range files {
		fset := token.NewFileSet()
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			panic(err)
		}
		rel, _ := filepath.Rel(filepath.Join(dir, "tests"), f)
		tt := test{File: rel}
		gws := map[string]bool{}
		ast.Inspect(af, func(n ast.Node) bool {
			cl, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			typ := ""
			switch t := cl.Type.(type) {
			case *ast.SelectorExpr:
				typ = fmt.Sprintf("%s.%s", t.X, t.Sel.Name)
			case *ast.ArrayType:
				if s, ok := t.Elt.(*ast.SelectorExpr); ok {
					typ = fmt.Sprintf("[]%s.%s", s.X, s.Sel.Name)
				}
			}
			switch typ {
			case "confsuite.ConformanceTest", "suite.ConformanceTest":
				for _, el := range cl.Elts {
					kv := el.(*ast.KeyValueExpr)
					switch kv.Key.(*ast.Ident).Name {
					case "ShortName":
						tt.Name = eval(kv.Value, nil).(string)
					case "Manifests":
						for _, m := range eval(kv.Value, nil).([]any) {
							tt.Manifests = append(tt.Manifests, m.(string))
						}
					}
				}
			case "types.NamespacedName":
				for _, el := range cl.Elts {
					kv := el.(*ast.KeyValueExpr)
					if kv.Key.(*ast.Ident).Name == "Name" {
						if b, ok := kv.Value.(*ast.BasicLit); ok {
							s, _ := strconv.Unquote(b.Value)
							gws[s] = true
						}
					}
				}
			case "http.ExpectedResponse", "[]http.ExpectedResponse", "grpc.ExpectedResponse", "[]grpc.ExpectedResponse":
				func() {
					defer func() {
						if r := recover(); r != nil {
							if e, ok := r.(evalErr); ok {
								tt.Unsupported = string(e)
								return
							}
							panic(r)
						}
					}()
					v := eval(cl, nil)
					if l, ok := v.([]any); ok {
						tt.Cases = append(tt.Cases, l...)
					} else {
						tt.Cases = append(tt.Cases, v)
					}
				}()
				return false
			}
			return true
		})
		for g := range gws {
			tt.Gateways = append(tt.Gateways, g)
		}
		sort.Strings(tt.Gateways)
		out = append(out, tt)
	}
	b, _ := json.MarshalIndent(out, "", " ")
	os.Stdout.Write(b)
}

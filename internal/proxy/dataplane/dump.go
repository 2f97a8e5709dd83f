package dataplane

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// configDump is the JSON shape of ConfigDump, loosely after Envoy's
// /config_dump: resources sorted by name, as protojson.
type configDump struct {
	Listeners []json.RawMessage `json:"listeners"`
	Routes    []json.RawMessage `json:"routes"`
	Clusters  []json.RawMessage `json:"clusters"`
	Endpoints []json.RawMessage `json:"endpoints"`
	Versions  map[string]string `json:"versions"`
}

// ConfigDump renders the applied resources as JSON:
// {"listeners":[…],"routes":[…],"clusters":[…],"endpoints":[…],"versions":{…}}.
// Safe from any goroutine; it reads the current runtime without locking.
func (d *Dataplane) ConfigDump() ([]byte, error) {
	rt := d.rt.Load()
	res := rt.res
	out := configDump{Versions: res.Versions}
	if out.Versions == nil {
		out.Versions = map[string]string{}
	}
	var err error
	if out.Listeners, err = dumpAll(res.Listeners); err != nil {
		return nil, err
	}
	if out.Routes, err = dumpAll(res.Routes); err != nil {
		return nil, err
	}
	if out.Clusters, err = dumpAll(res.Clusters); err != nil {
		return nil, err
	}
	if out.Endpoints, err = dumpAll(rt.dumpEndpoints()); err != nil { // with outlier state (outlier.go)
		return nil, err
	}
	return json.MarshalIndent(out, "", "  ")
}

func dumpAll[M proto.Message](m map[string]M) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(m))
	for _, k := range sortedKeys(m) {
		b, err := protojson.Marshal(m[k])
		if err != nil {
			return nil, fmt.Errorf("config dump: %q: %w", k, err)
		}
		out = append(out, b)
	}
	return out, nil
}

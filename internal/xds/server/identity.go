package server

import (
	"fmt"
	"slices"

	"weft.dev/weft/internal/xds/contract"
)

// Identity finds a connected proxy by node id, or by workload name
// ("name" or "namespace/name") when exactly one proxy has it. Safe from
// any goroutine.
func (s *Server) Identity(proxy string) (contract.Identity, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.proxies[proxy]; ok {
		return p.id, nil
	}
	var found []contract.Identity
	for _, p := range s.proxies {
		if p.id.WorkloadName == proxy || p.id.Namespace+"/"+p.id.WorkloadName == proxy {
			found = append(found, p.id)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return contract.Identity{}, fmt.Errorf("no connected proxy has node id or workload %q", proxy)
	}
	var ids []string
	for _, id := range found {
		ids = append(ids, id.ID)
	}
	slices.Sort(ids)
	return contract.Identity{}, fmt.Errorf("%d proxies run workload %q; name one by node id: %v", len(found), proxy, ids)
}

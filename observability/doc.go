// Package observability holds no code: it is the home of the alert rules
// (prometheus/weft-alerts.yaml, with promtool unit tests in
// prometheus/tests) and the Grafana dashboards (grafana/*.json) Weft
// ships, and of the tests that check them: promtool check rules and test
// rules, the dashboards' import format and the syntax of every panel's
// query. e2e/observability_test.go runs them against a real Prometheus
// scraping a running mesh. docs/observability.md says how to load them.
package observability

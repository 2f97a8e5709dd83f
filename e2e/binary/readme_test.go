package binary

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// readmeCommands is what README.md tells a user to run, parsed so the
// tests run exactly that.
type readmeCommands struct {
	// buildArgs is the build command after "go": build -o . ./cmd/weft ./cmd/weft-proxy.
	buildArgs []string
	// pieces are the commands of "Running the pieces yourself", in order,
	// each split into words; the first word is ./weft or ./weft-proxy. A
	// redirect of stdout is the two words ">" and the file.
	pieces [][]string
	// curls are the requests the README sends to the pieces.
	curls []curl
	// brokenLine is the error line README shows for `weft validate examples/broken`.
	brokenLine string
	// demoTryIt are the "Try it" lines of the demo's output.
	demoTryIt []string
}

// curl is one curl command line of the README: its URL and -H headers.
// What it pipes into (jq, grep) is left out.
type curl struct {
	line    string
	url     string
	headers map[string]string
}

var (
	readmeOnce   sync.Once
	readmeParsed readmeCommands
	readmeErr    error
)

// readme parses README.md once.
func readme(t *testing.T) readmeCommands {
	t.Helper()
	readmeOnce.Do(func() { readmeParsed, readmeErr = parseReadme(filepath.Join(repoRoot, "README.md")) })
	if readmeErr != nil {
		t.Fatalf("README.md: %v", readmeErr)
	}
	// A copy: callers may rewrite the words.
	out := readmeParsed
	out.buildArgs = append([]string(nil), out.buildArgs...)
	out.pieces = nil
	for _, p := range readmeParsed.pieces {
		out.pieces = append(out.pieces, append([]string(nil), p...))
	}
	return out
}

func parseReadme(path string) (readmeCommands, error) {
	var rc readmeCommands
	b, err := os.ReadFile(path)
	if err != nil {
		return rc, err
	}
	text := string(b)

	pieces, err := section(text, "## Running the pieces yourself")
	if err != nil {
		return rc, err
	}
	blocks := codeBlocks(pieces, "```sh")
	if len(blocks) < 2 {
		return rc, fmt.Errorf("running the pieces: want a block of commands and a block of requests, found %d sh blocks", len(blocks))
	}
	for _, line := range shellLines(blocks[0]) {
		words, err := shellWords(line)
		if err != nil {
			return rc, fmt.Errorf("%q: %w", line, err)
		}
		switch {
		case len(words) > 2 && words[0] == "go" && words[1] == "build":
			rc.buildArgs = words[1:]
		case words[0] == "./weft" || words[0] == "./weft-proxy":
			rc.pieces = append(rc.pieces, words)
		default:
			return rc, fmt.Errorf("running the pieces: unexpected command %q", line)
		}
	}
	if rc.buildArgs == nil || len(rc.pieces) == 0 {
		return rc, fmt.Errorf("running the pieces: no go build or no ./weft commands")
	}
	for _, line := range shellLines(blocks[1]) {
		c, err := parseCurl(line)
		if err != nil {
			return rc, err
		}
		rc.curls = append(rc.curls, c)
	}

	const validate = "$ go run ./cmd/weft validate examples/broken\n"
	i := strings.Index(text, validate)
	if i < 0 {
		return rc, fmt.Errorf("no %q", strings.TrimSpace(validate))
	}
	rc.brokenLine, _, _ = strings.Cut(text[i+len(validate):], "\n")

	demo, err := section(text, "## What the demo shows")
	if err != nil {
		return rc, err
	}
	out := codeBlocks(demo, "```")
	if len(out) == 0 {
		return rc, fmt.Errorf("what the demo shows: no output block")
	}
	for _, line := range strings.Split(out[0], "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "curl ") || strings.HasPrefix(l, "http_proxy=") {
			rc.demoTryIt = append(rc.demoTryIt, l)
		}
	}
	if len(rc.demoTryIt) == 0 {
		return rc, fmt.Errorf("what the demo shows: no Try it commands")
	}
	return rc, nil
}

// section returns the text from heading to the next heading of level 2.
func section(text, heading string) (string, error) {
	i := strings.Index(text, "\n"+heading+"\n")
	if i < 0 {
		return "", fmt.Errorf("no section %q", heading)
	}
	s := text[i+len(heading)+2:]
	if j := strings.Index(s, "\n## "); j >= 0 {
		s = s[:j]
	}
	return s, nil
}

// codeBlocks returns the bodies of the fenced blocks opened by fence.
func codeBlocks(text, fence string) []string {
	var out []string
	for {
		i := strings.Index(text, fence+"\n")
		if i < 0 {
			return out
		}
		text = text[i+len(fence)+1:]
		j := strings.Index(text, "```\n")
		if j < 0 {
			return out
		}
		out = append(out, text[:j])
		text = text[j+4:]
	}
}

// shellLines joins backslash continuations and drops blank lines.
func shellLines(block string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(block, "\n") {
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		if l = strings.TrimSpace(cur + l); l != "" {
			out = append(out, l)
		}
		cur = ""
	}
	return out
}

// shellWords splits a command line the way sh would for the README's
// commands: words separated by blanks, single quotes, a comment from an
// unquoted # at the start of a word, and "> file" (stdout to a file: the
// word ">"). Anything fancier is an error, so a README change the tests
// cannot follow is noticed.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case quoted && r == '\'':
			quoted = false
		case quoted:
			cur.WriteRune(r)
		case r == '\'':
			quoted, inWord = true, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case r == '#' && !inWord:
			return words, nil
		case r == '>' && !inWord:
			words = append(words, ">")
		case strings.ContainsRune("\"$`\\;&<>(){}", r):
			return nil, fmt.Errorf("shell syntax %q is not understood by the test", r)
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// parseCurl reads a README curl line: -s, -H 'Name: value' and a URL,
// optionally piped into something else.
func parseCurl(line string) (curl, error) {
	head, _, _ := strings.Cut(line, "|")
	words, err := shellWords(head)
	if err != nil {
		return curl{}, fmt.Errorf("%q: %w", line, err)
	}
	c := curl{line: line, headers: map[string]string{}}
	if len(words) == 0 || words[0] != "curl" {
		return c, fmt.Errorf("%q: not a curl command", line)
	}
	for i := 1; i < len(words); i++ {
		switch w := words[i]; {
		case w == "-s":
		case w == "-H" && i+1 < len(words):
			k, v, ok := strings.Cut(words[i+1], ":")
			if !ok {
				return c, fmt.Errorf("%q: header %q", line, words[i+1])
			}
			c.headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
			i++
		case strings.HasPrefix(w, "http://") && c.url == "":
			c.url = w
		default:
			return c, fmt.Errorf("%q: curl argument %q is not understood by the test", line, w)
		}
	}
	if c.url == "" {
		return c, fmt.Errorf("%q: no URL", line)
	}
	return c, nil
}

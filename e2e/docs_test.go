package e2e

import (
	"os"
	"strings"
	"testing"
)

// docBlock is a fenced code block of a document.
type docBlock struct {
	file, lang, text string
	line             int
}

// docBlocks returns the fenced code blocks of file, in order.
func docBlocks(t *testing.T, file string) []docBlock {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []docBlock
	var open *docBlock
	for i, line := range strings.Split(string(raw), "\n") {
		fence := strings.TrimLeft(line, " ") // blocks in list items are indented
		switch {
		case open == nil && strings.HasPrefix(fence, "```"):
			open = &docBlock{file: file, lang: strings.TrimPrefix(fence, "```"), line: i + 1}
		case open != nil && fence == "```":
			blocks = append(blocks, *open)
			open = nil
		case open != nil:
			open.text += strings.TrimPrefix(line, "  ") + "\n"
		}
	}
	if open != nil {
		t.Fatalf("%s:%d: a code block is never closed", file, open.line)
	}
	return blocks
}

// findBlock returns the one block of file that contains marker.
func findBlock(t *testing.T, file, marker string) docBlock {
	t.Helper()
	var found []docBlock
	for _, b := range docBlocks(t, file) {
		if strings.Contains(b.text, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d code blocks contain %q, want 1", file, len(found), marker)
	}
	return found[0]
}

// findLine returns the one line of file's text that contains marker.
func findLine(t *testing.T, file, marker string) string {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.Contains(line, marker) {
			found = append(found, line)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d lines contain %q, want 1", file, len(found), marker)
	}
	return found[0]
}

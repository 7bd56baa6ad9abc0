// Package doctest reads the code blocks and lines of the repository's
// documents, for the tests that run what the documents show.
package doctest

import (
	"os"
	"strings"
	"testing"
)

// Block is a fenced code block of a document.
type Block struct {
	File, Lang, Text string
	Line             int // where its opening fence is
}

// Blocks returns the fenced code blocks of file, in order.
func Blocks(t testing.TB, file string) []Block {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []Block
	var open *Block
	for i, line := range strings.Split(string(raw), "\n") {
		fence := strings.TrimLeft(line, " ") // blocks in list items are indented
		switch {
		case open == nil && strings.HasPrefix(fence, "```"):
			open = &Block{File: file, Lang: strings.TrimPrefix(fence, "```"), Line: i + 1}
		case open != nil && fence == "```":
			blocks = append(blocks, *open)
			open = nil
		case open != nil:
			open.Text += strings.TrimPrefix(line, "  ") + "\n"
		}
	}
	if open != nil {
		t.Fatalf("%s:%d: a code block is never closed", file, open.Line)
	}
	return blocks
}

// Find returns the one block of file that contains marker.
func Find(t testing.TB, file, marker string) Block {
	t.Helper()
	var found []Block
	for _, b := range Blocks(t, file) {
		if strings.Contains(b.Text, marker) {
			found = append(found, b)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d code blocks contain %q, want 1", file, len(found), marker)
	}
	return found[0]
}

// Line returns the one line of file's text that contains marker.
func Line(t testing.TB, file, marker string) string {
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

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// libraryClosure returns the shared libraries that the ELF files need,
// as ldd reports them, the dynamic loader included. ldd only runs on
// trusted binaries from the build host's packages.
func libraryClosure(files ...string) ([]string, error) {
	seen := map[string]bool{}
	for _, f := range files {
		out, err := exec.Command("ldd", f).Output()
		if err != nil {
			return nil, fmt.Errorf("ldd %s: %w", f, err)
		}
		scanner := bufio.NewScanner(bytes.NewReader(out))
		for scanner.Scan() {
			line := strings.TrimSpace(scanner.Text())
			var path string
			if _, after, ok := strings.Cut(line, "=> "); ok {
				path, _, _ = strings.Cut(after, " (")
			} else if strings.HasPrefix(line, "/") {
				path, _, _ = strings.Cut(line, " (")
			}
			if path == "" {
				continue
			}
			if !filepath.IsAbs(path) {
				return nil, fmt.Errorf("ldd %s: library not found: %s", f, line)
			}
			seen[path] = true
		}
	}
	var libs []string
	for p := range seen {
		libs = append(libs, p)
	}
	sort.Strings(libs)
	return libs, nil
}

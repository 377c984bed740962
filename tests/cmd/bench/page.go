package main

import (
	"bytes"
	_ "embed"
	"os"
	"runtime"
	"strings"
	"text/template"

	"github.com/stage1-vm/stage1-vm/stage1/run"
)

//go:embed page.md.tmpl
var pageTemplate string

// writePage writes the benchmark page (docs/benchmarks.md): what is
// measured, on which machine, and the tables.
func writePage(path string, r *results, m *machine) error {
	tmpl, err := template.New("page").Parse(pageTemplate)
	if err != nil {
		return err
	}
	memMiB, cpus := run.UnlimitedVMSize(runtime.NumCPU())
	var tables bytes.Buffer
	writeTables(&tables, r, m)
	data := struct {
		*machine
		MemoryMiB       int
		CPUs            int
		PollMs          int64
		PollingErrorMiB float64
		Concurrent      int
		Tables          string
		BusyIterations  int
	}{
		machine:         m,
		MemoryMiB:       memMiB,
		CPUs:            cpus,
		PollMs:          pollInterval.Milliseconds(),
		PollingErrorMiB: r.pollingError(),
		Concurrent:      m.ConcurrentOf,
		Tables:          strings.TrimRight(tables.String(), "\n"),
		BusyIterations:  r.BusyIterations,
	}
	var page bytes.Buffer
	if err := tmpl.Execute(&page, data); err != nil {
		return err
	}
	return os.WriteFile(path, page.Bytes(), 0o644)
}

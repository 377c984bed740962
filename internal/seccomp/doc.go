// Package seccomp turns an app's system call filter into a classic BPF
// program for seccomp(2) and installs it. The host resolves the names in
// the app's isolators into x86-64 system call numbers. The guest builds and
// loads the filter just before it execs the app.
package seccomp

//go:generate go run ./gen

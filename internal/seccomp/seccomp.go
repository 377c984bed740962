package seccomp

import (
	"fmt"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Filter is an app's system call filter.
type Filter struct {
	// Allow makes Syscalls the only calls the app may make; without it,
	// Syscalls are the calls it may not make.
	Allow bool `json:"allow,omitempty"`
	// Syscalls are x86-64 system call numbers.
	Syscalls []uint32 `json:"syscalls"`
	// Errno is the error number a denied call returns; 0 kills the
	// process with SIGSYS instead.
	Errno uint32 `json:"errno,omitempty"`
}

// Always are the calls an allow list always contains: execve to start the
// app once the filter is on, the exits, and the return from a signal
// handler.
var Always = []string{"execve", "exit", "exit_group", "rt_sigreturn"}

// Number returns the x86-64 number of a system call.
func Number(name string) (uint32, bool) {
	n, ok := syscallNumbers[name]
	return n, ok
}

// Names returns every system call name in the table, sorted.
func Names() []string {
	names := make([]string, 0, len(syscallNumbers))
	for name := range syscallNumbers {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Errno returns the number of an errno name such as "EPERM".
func Errno(name string) (uint32, error) {
	for e := syscall.Errno(1); e < 4096; e++ {
		if unix.ErrnoName(e) == name {
			return uint32(e), nil
		}
	}
	return 0, fmt.Errorf("unknown errno %q: use a name from errno(3) such as EPERM or ENOSYS", name)
}

// Offsets into struct seccomp_data and the values the program compares.
const (
	offsetNR      = 0
	offsetArch    = 4
	auditArchX86  = 0xc000003e // AUDIT_ARCH_X86_64
	x32SyscallBit = 0x40000000
)

// Program returns the filter as a classic BPF program. Calls made through
// another ABI (i386 or x32) are denied, since the numbers are x86-64's.
func (f Filter) Program() []unix.SockFilter {
	deny := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	if f.Errno != 0 {
		deny = unix.SECCOMP_RET_ERRNO | (f.Errno & unix.SECCOMP_RET_DATA)
	}
	match, otherwise := deny, uint32(unix.SECCOMP_RET_ALLOW)
	if f.Allow {
		match, otherwise = otherwise, match
	}
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offsetArch),
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, auditArchX86, 1, 0),
		stmt(unix.BPF_RET|unix.BPF_K, deny),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offsetNR),
		jump(unix.BPF_JMP|unix.BPF_JGE|unix.BPF_K, x32SyscallBit, 0, 1),
		stmt(unix.BPF_RET|unix.BPF_K, deny),
	}
	seen := map[uint32]bool{}
	for _, nr := range f.Syscalls {
		if seen[nr] {
			continue
		}
		seen[nr] = true
		prog = append(prog,
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, nr, 0, 1),
			stmt(unix.BPF_RET|unix.BPF_K, match))
	}
	return append(prog, stmt(unix.BPF_RET|unix.BPF_K, otherwise))
}

// InstallAndExec loads the filter on the calling thread and execs argv0
// with argv and env. The caller must hold its OS thread locked and have set
// no_new_privs or hold CAP_SYS_ADMIN. Everything the exec needs is prepared
// before the filter is on, so that the Go runtime makes no other call in
// between. It returns only on failure, with the bare errno when execve(2)
// failed, as unix.Exec does.
func InstallAndExec(f Filter, argv0 string, argv, env []string) error {
	prog := f.Program()
	if len(prog) > unix.BPF_MAXINSNS {
		return fmt.Errorf("the seccomp filter has %d instructions, more than the kernel's %d", len(prog), unix.BPF_MAXINSNS)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	path, err := syscall.BytePtrFromString(argv0)
	if err != nil {
		return err
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envp, err := syscall.SlicePtrFromStrings(env)
	if err != nil {
		return err
	}
	if _, _, errno := unix.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&fprog)), 0, 0, 0); errno != 0 {
		return fmt.Errorf("load the seccomp filter: %w", errno)
	}
	_, _, errno := unix.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])))
	return errno
}

// String describes the filter for logs.
func (f Filter) String() string {
	mode := "deny"
	if f.Allow {
		mode = "allow"
	}
	action := "kill"
	if f.Errno != 0 {
		action = unix.ErrnoName(syscall.Errno(f.Errno))
	}
	return fmt.Sprintf("%s %d calls, denying with %s", mode, len(f.Syscalls), strings.ToLower(action))
}

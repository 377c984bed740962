package pod

import (
	"fmt"
	"strings"

	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/seccomp"
)

// DeniedSyscalls are the system calls that an app's default filter leaves
// out: loading kernel code, changing the machine's clock, mounts and
// namespaces, tracing other processes, kernel keys and other calls an app
// has no business making. They are what the default groups of rkt's
// seccomp isolators (@rkt/default-blacklist and the rest) stand for here.
var DeniedSyscalls = []string{
	"acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
	"delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
	"get_kernel_syms", "init_module", "ioperm", "iopl", "kcmp", "kexec_file_load",
	"kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
	"name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree",
	"perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev",
	"ptrace", "query_module", "quotactl", "reboot", "request_key", "setns",
	"settimeofday", "swapoff", "swapon", "_sysctl", "sysfs", "syslog", "umount2",
	"unshare", "uselib", "userfaultfd", "ustat", "vhangup",
}

// Group names of rkt's seccomp isolators that this version supports.
const (
	groupAll             = "@appc.io/all"
	groupEmpty           = "@appc.io/empty"
	groupRktWhitelist    = "@rkt/default-whitelist"
	groupRktBlacklist    = "@rkt/default-blacklist"
	groupDockerWhitelist = "@docker/default-whitelist"
	groupDockerBlacklist = "@docker/default-blacklist"
)

// defaultAllowed returns every known system call but the denied ones.
func defaultAllowed() []string {
	denied := map[string]bool{}
	for _, name := range DeniedSyscalls {
		denied[name] = true
	}
	var allowed []string
	for _, name := range seccomp.Names() {
		if !denied[name] {
			allowed = append(allowed, name)
		}
	}
	return allowed
}

// seccompFilter returns an app's system call filter from its isolators:
// the default allow list without an isolator, the retain set as an allow
// list, the remove set as a deny list. It returns nil for no filter
// (@appc.io/all in a retain set).
func seccompFilter(isolators types.Isolators) (*seccomp.Filter, error) {
	var set types.LinuxSeccompSet
	var name types.ACIdentifier
	for _, iso := range isolators {
		if s, ok := iso.Value().(types.LinuxSeccompSet); ok {
			if set != nil {
				return nil, fmt.Errorf("isolators %s and %s: an app takes one seccomp isolator", name, iso.Name)
			}
			set, name = s, iso.Name
		}
	}
	if set == nil {
		return filterOf(true, defaultAllowed(), "")
	}
	allow := name == types.LinuxSeccompRetainSetName
	var names []string
	for _, entry := range set.Set() {
		e := string(entry)
		switch {
		case e == groupAll && allow:
			return nil, nil
		case e == groupEmpty && !allow:
			return filterOf(true, defaultAllowed(), string(set.Errno()))
		case e == groupRktWhitelist || e == groupDockerWhitelist:
			if !allow {
				return nil, fmt.Errorf("isolator %s: group %s belongs in %s", name, e, types.LinuxSeccompRetainSetName)
			}
			names = append(names, defaultAllowed()...)
		case e == groupRktBlacklist || e == groupDockerBlacklist:
			if allow {
				return nil, fmt.Errorf("isolator %s: group %s belongs in %s", name, e, types.LinuxSeccompRemoveSetName)
			}
			names = append(names, DeniedSyscalls...)
		case strings.HasPrefix(e, "@"):
			return nil, fmt.Errorf("isolator %s: seccomp group %q is not supported; use system call names or %s", name, e,
				strings.Join([]string{groupAll, groupEmpty, groupRktWhitelist, groupRktBlacklist, groupDockerWhitelist, groupDockerBlacklist}, ", "))
		default:
			names = append(names, e)
		}
	}
	filter, err := filterOf(allow, names, string(set.Errno()))
	if err != nil {
		return nil, fmt.Errorf("isolator %s: %w", name, err)
	}
	return filter, nil
}

// filterOf resolves system call names and the errno name into a filter.
func filterOf(allow bool, names []string, errno string) (*seccomp.Filter, error) {
	f := &seccomp.Filter{Allow: allow}
	if allow {
		names = append(names, seccomp.Always...)
	}
	for _, n := range names {
		nr, ok := seccomp.Number(n)
		if !ok {
			return nil, fmt.Errorf("unknown system call %q", n)
		}
		f.Syscalls = append(f.Syscalls, nr)
	}
	if errno != "" {
		e, err := seccomp.Errno(errno)
		if err != nil {
			return nil, err
		}
		f.Errno = e
	}
	return f, nil
}

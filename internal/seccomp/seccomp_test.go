package seccomp

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// run evaluates a program of the instructions Program emits against one
// system call, as the kernel would, and returns the action.
func run(t *testing.T, prog []unix.SockFilter, arch, nr uint32) uint32 {
	t.Helper()
	data := make([]byte, 16)
	binary.LittleEndian.PutUint32(data[offsetNR:], nr)
	binary.LittleEndian.PutUint32(data[offsetArch:], arch)
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			if acc >= in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return in.K
		default:
			t.Fatalf("unexpected instruction %+v at %d", in, pc)
		}
	}
	t.Fatal("the program ran off its end")
	return 0
}

func TestProgram(t *testing.T) {
	read, _ := Number("read")
	mount, _ := Number("mount")
	eperm, err := Errno("EPERM")
	if err != nil || eperm != 1 {
		t.Fatalf("Errno(EPERM) = %d, %v", eperm, err)
	}
	errnoEPERM := uint32(unix.SECCOMP_RET_ERRNO | 1)
	kill := uint32(unix.SECCOMP_RET_KILL_PROCESS)
	allow := uint32(unix.SECCOMP_RET_ALLOW)
	cases := []struct {
		name   string
		filter Filter
		arch   uint32
		nr     uint32
		want   uint32
	}{
		{"allow list allows", Filter{Allow: true, Syscalls: []uint32{read}}, auditArchX86, read, allow},
		{"allow list kills", Filter{Allow: true, Syscalls: []uint32{read}}, auditArchX86, mount, kill},
		{"allow list errno", Filter{Allow: true, Syscalls: []uint32{read}, Errno: eperm}, auditArchX86, mount, errnoEPERM},
		{"deny list denies", Filter{Syscalls: []uint32{mount}, Errno: eperm}, auditArchX86, mount, errnoEPERM},
		{"deny list allows", Filter{Syscalls: []uint32{mount}}, auditArchX86, read, allow},
		{"other ABI denied", Filter{Syscalls: []uint32{mount}}, 0x40000003, read, kill},
		{"x32 denied", Filter{Syscalls: []uint32{mount}, Errno: eperm}, auditArchX86, read | x32SyscallBit, errnoEPERM},
		{"duplicates once", Filter{Allow: true, Syscalls: []uint32{read, read}}, auditArchX86, read, allow},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := run(t, c.filter.Program(), c.arch, c.nr); got != c.want {
				t.Errorf("action = %#x, want %#x", got, c.want)
			}
		})
	}
}

func TestErrnoUnknown(t *testing.T) {
	if _, err := Errno("EWHAT"); err == nil {
		t.Error("Errno(EWHAT) succeeded, want an error")
	}
}

func TestTableKnowsCommonCalls(t *testing.T) {
	for name, want := range map[string]uint32{"read": 0, "execve": 59, "mount": 165, "openat2": 437} {
		if got, ok := Number(name); !ok || got != want {
			t.Errorf("Number(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}

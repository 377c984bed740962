package qemu

import (
	"slices"
	"strings"
	"testing"

	govmm "github.com/intel/govmm/qemu"
)

func testVM() *VM {
	return &VM{
		Name: "rkt-x", UUID: "6ee58c77-c0fe-4567-82bd-6b08ed314883",
		Bundle: Bundle{Dir: "/s1/qemu"}, Accel: TCG, Machine: "microvm",
		MemoryMiB: 128, CPUs: 1, Kernel: "/s1/bzImage",
		KernelParams: []string{"console=ttyS0", "ro"},
		Devices: []govmm.Device{
			Console{Socket: "stage1-vm/console.sock"},
			SerialPort{ID: "status", Name: "org.stage1-vm.status", Socket: "stage1-vm/status.sock"},
			Share{Tag: "stage1-vm-system", Path: "/pod/guest", ReadOnly: true},
			Share{Tag: "app0", Path: "/pod/app"},
		},
	}
}

func TestArgs(t *testing.T) {
	args, err := testVM().Args()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	want := "-name rkt-x -uuid 6ee58c77-c0fe-4567-82bd-6b08ed314883 -machine microvm,ioapic2=on -accel tcg,tb-size=32 -cpu max -smp 1 -m 128M " +
		"-nodefaults -no-user-config -display none -no-reboot -L /s1/qemu/share/qemu -kernel /s1/bzImage -append console=ttyS0 ro tsc=reliable " +
		"-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny -device virtio-serial-device,id=vser0,max_ports=8 " +
		"-chardev socket,id=console,path=stage1-vm/console.sock -serial chardev:console " +
		"-chardev socket,id=status,path=stage1-vm/status.sock -device virtserialport,bus=vser0.0,chardev=status,id=port-status,name=org.stage1-vm.status " +
		"-fsdev local,id=fs-stage1-vm-system,path=/pod/guest,security_model=none,readonly=on,multidevs=remap -device virtio-9p-device,fsdev=fs-stage1-vm-system,mount_tag=stage1-vm-system " +
		"-fsdev local,id=fs-app0,path=/pod/app,security_model=passthrough,multidevs=remap -device virtio-9p-device,fsdev=fs-app0,mount_tag=app0"
	if got != want {
		t.Errorf("args:\n got %s\nwant %s", got, want)
	}

	// Under KVM the guest has kvm-clock, and a tsc= of the user's wins.
	vm := testVM()
	vm.Accel = KVM
	if args, err := vm.Args(); err != nil || !slices.Contains(args, "console=ttyS0 ro") {
		t.Errorf("KVM kernel parameters: %q, %v; want them unchanged", args, err)
	}
	vm = testVM()
	vm.KernelParams = append(vm.KernelParams, "--", "x")
	if args, err := vm.Args(); err != nil || !slices.Contains(args, "console=ttyS0 ro tsc=reliable -- x") {
		t.Errorf("kernel parameters with init arguments: %q, %v; want tsc=reliable before --", args, err)
	}
	vm = testVM()
	vm.KernelParams = append(vm.KernelParams, "tsc=unstable")
	if args, err := vm.Args(); err != nil || !slices.Contains(args, "console=ttyS0 ro tsc=unstable") {
		t.Errorf("kernel parameters with the user's tsc=unstable: %q, %v", args, err)
	}
}

func TestArgsKVM(t *testing.T) {
	vm := testVM()
	vm.Accel = KVM
	args, err := vm.Args()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	if !strings.Contains(got, "-accel kvm -cpu host") {
		t.Errorf("KVM args lack -accel kvm -cpu host: %s", got)
	}
}

func TestArgsRejects(t *testing.T) {
	cases := map[string]func(*VM){
		"accelerator":       func(vm *VM) { vm.Accel = "xen" },
		"memory":            func(vm *VM) { vm.MemoryMiB = 16 },
		"cpus":              func(vm *VM) { vm.CPUs = 0 },
		"kernel param":      func(vm *VM) { vm.KernelParams = append(vm.KernelParams, "a b") },
		"long tag":          func(vm *VM) { vm.Devices = append(vm.Devices, Share{Tag: strings.Repeat("t", 32), Path: "/x"}) },
		"comma in tag":      func(vm *VM) { vm.Devices = append(vm.Devices, Share{Tag: "t,x", Path: "/a"}) },
		"port without name": func(vm *VM) { vm.Devices = append(vm.Devices, SerialPort{ID: "p", Socket: "s"}) },
	}
	for name, mutate := range cases {
		vm := testVM()
		mutate(vm)
		if _, err := vm.Args(); err == nil {
			t.Errorf("%s: Args succeeded, want an error", name)
		}
	}
}

func TestShareEscapesCommas(t *testing.T) {
	args := Share{Tag: "app0", Path: "/pods/a,b"}.QemuParams(nil)
	if args[1] != "local,id=fs-app0,path=/pods/a,,b,security_model=passthrough,multidevs=remap" {
		t.Errorf("-fsdev %s does not escape the comma", args[1])
	}
}

func TestNICArgs(t *testing.T) {
	tap := TapNIC{ID: "net0", FD: 3, MAC: "0a:58:ac:10:1c:02"}
	if got := strings.Join(tap.QemuParams(nil), " "); got != "-netdev tap,id=net0,fd=3 -device virtio-net-device,netdev=net0,mac=0a:58:ac:10:1c:02" {
		t.Errorf("TapNIC args = %s", got)
	}
	user := UserNIC{ID: "net0", MAC: "52:54:00:12:34:56", Forwards: []HostForward{{Protocol: "tcp", HostPort: 8080, GuestPort: 80}, {Protocol: "udp", HostIP: "127.0.0.1", HostPort: 53, GuestPort: 53}}}
	if got := strings.Join(user.QemuParams(nil), " "); got != "-netdev user,id=net0,hostfwd=tcp::8080-:80,hostfwd=udp:127.0.0.1:53-:53 -device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56" {
		t.Errorf("UserNIC args = %s", got)
	}
	invalid := []interface{ Valid() bool }{
		TapNIC{ID: "net0", FD: 1, MAC: "0a:58:ac:10:1c:02"},
		TapNIC{ID: "net0", FD: 3, MAC: "not-a-mac"},
		UserNIC{ID: "net0", MAC: "52:54:00:12:34:56", Forwards: []HostForward{{Protocol: "sctp", HostPort: 1, GuestPort: 1}}},
		UserNIC{ID: "net0", MAC: "52:54:00:12:34:56", Forwards: []HostForward{{Protocol: "tcp", HostIP: "1.2.3.4,x", HostPort: 1, GuestPort: 1}}},
	}
	for _, d := range invalid {
		if d.Valid() {
			t.Errorf("%+v is valid, want invalid", d)
		}
	}
}

func TestQMPSocketParams(t *testing.T) {
	got := strings.Join(QMPSocket{Path: "pod,dir/qmp.sock"}.QemuParams(nil), " ")
	want := "-chardev socket,id=qmp,path=pod,,dir/qmp.sock,server=on,wait=off -mon chardev=qmp,mode=control"
	if got != want {
		t.Errorf("QemuParams = %q, want %q", got, want)
	}
	if (QMPSocket{}).Valid() {
		t.Error("a QMP socket without a path is valid")
	}
}

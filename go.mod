module github.com/stage1-vm/stage1-vm

go 1.26.0

require (
	github.com/appc/spec v0.8.11
	github.com/creack/pty v1.1.24
	github.com/hashicorp/go-multierror v1.1.1
	github.com/intel/govmm v0.0.0-20200825065022-6042f6033126
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)

require (
	github.com/coreos/go-semver v0.3.1 // indirect
	github.com/google/gofuzz v1.2.0 // indirect
	github.com/hashicorp/errwrap v1.0.0 // indirect
	github.com/spf13/pflag v1.1.0 // indirect
	go4.org v0.0.0-20260112195520-a5071408f32f // indirect
	gopkg.in/inf.v0 v0.9.1 // indirect
)

package qemu

import (
	"context"
	"fmt"

	govmm "github.com/intel/govmm/qemu"
)

// PowerDown presses the guest's ACPI power button through the QMP socket
// and waits until QEMU reports the guest's shutdown or ctx ends. The guest
// decides what the press does. In the stage1-vm guest a service turns it
// into a reboot, which stops the apps gracefully and then ends QEMU.
func PowerDown(ctx context.Context, socket string) error {
	disconnected := make(chan struct{})
	q, _, err := govmm.QMPStart(ctx, socket, govmm.QMPConfig{}, disconnected)
	if err != nil {
		return fmt.Errorf("connect to QMP socket %s: %w", socket, err)
	}
	defer q.Shutdown()
	if err := q.ExecuteQMPCapabilities(ctx); err != nil {
		return fmt.Errorf("QMP capabilities negotiation on %s: %w", socket, err)
	}
	if err := q.ExecuteSystemPowerdown(ctx); err != nil {
		return fmt.Errorf("QMP system_powerdown on %s: %w", socket, err)
	}
	return nil
}

package stage0

import (
	"archive/tar"
	"encoding/json"
	"os"
	"time"

	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/stage1-vm/stage1-vm/internal/tartree"
)

// WriteAppACI packs the image tree rootfs into an uncompressed ACI at out,
// with an image manifest named name whose app runs exec as root.
func WriteAppACI(rootfs, name string, exec []string, out string) error {
	acName, err := types.NewACIdentifier(name)
	if err != nil {
		return err
	}
	im := schema.BlankImageManifest()
	im.Name = *acName
	im.Labels = types.Labels{
		{Name: "version", Value: "1.0.0"},
		{Name: "os", Value: "linux"},
		{Name: "arch", Value: "amd64"},
	}
	im.App = &types.App{Exec: exec, User: "0", Group: "0"}
	manifest, err := json.Marshal(im)
	if err != nil {
		return err
	}
	return WriteACI(rootfs, manifest, out)
}

// WriteACI packs the image tree rootfs into an uncompressed ACI at out,
// with the given image manifest.
func WriteACI(rootfs string, manifest []byte, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: "manifest", Mode: 0o644, Size: int64(len(manifest)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(manifest); err != nil {
		return err
	}
	if err := tartree.AddTree(tw, rootfs, "rootfs", time.Unix(0, 0)); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

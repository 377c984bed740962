package pod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/stage1-vm/stage1-vm/internal/inroot"
)

// maxAccountFileSize bounds how much of an image's /etc/passwd or /etc/group
// is read: the file is image content, so it may be anything.
const maxAccountFileSize = 4 << 20

// account is the uid, name, home and shell that an app's user resolves to.
type account struct {
	uid   uint32
	name  string
	home  string
	shell string
}

// resolveUser turns an appc user field into a uid, as the appc spec allows:
// a number, a name from the image's /etc/passwd, or an absolute path in the
// image whose owner is the user. "root" resolves without a passwd file.
func resolveUser(rootfs, user string) (account, error) {
	entries, perr := readAccounts(rootfs, "/etc/passwd")
	byName := func(name string) ([]string, bool) {
		for _, e := range entries {
			if len(e) >= 7 && e[0] == name {
				return e, true
			}
		}
		return nil, false
	}
	byID := func(id uint32) []string {
		for _, e := range entries {
			if len(e) >= 7 && e[2] == strconv.FormatUint(uint64(id), 10) {
				return e
			}
		}
		return nil
	}
	fromEntry := func(uid uint32, e []string) account {
		a := account{uid: uid, name: strconv.FormatUint(uint64(uid), 10), home: "/", shell: "/bin/sh"}
		if uid == 0 {
			a.name, a.home = "root", "/root"
		}
		if e != nil {
			a.name = e[0]
			if e[5] != "" {
				a.home = e[5]
			}
			if e[6] != "" {
				a.shell = e[6]
			}
		}
		return a
	}

	if n, err := strconv.ParseUint(user, 10, 32); err == nil {
		return fromEntry(uint32(n), byID(uint32(n))), nil
	}
	if looksNumeric(user) {
		return account{}, fmt.Errorf("user %q: uid out of range; use 0 to 4294967294", user)
	}
	if path.IsAbs(user) {
		uid, _, err := ownerOf(rootfs, user)
		if err != nil {
			return account{}, fmt.Errorf("user %q: %w", user, err)
		}
		return fromEntry(uid, byID(uid)), nil
	}
	if e, ok := byName(user); ok {
		n, err := strconv.ParseUint(e[2], 10, 32)
		if err != nil {
			return account{}, fmt.Errorf("user %q: invalid uid %q in the image's /etc/passwd", user, e[2])
		}
		return fromEntry(uint32(n), e), nil
	}
	if user == "root" {
		return fromEntry(0, nil), nil
	}
	if perr != nil {
		return account{}, fmt.Errorf("user %q: %w; use a numeric uid or add the user to the image", user, perr)
	}
	return account{}, fmt.Errorf("user %q not found in the image's /etc/passwd; use a numeric uid or add the user to the image", user)
}

// resolveGroup turns an appc group field into a gid: a number, a name from
// the image's /etc/group, or an absolute path whose group owns it.
func resolveGroup(rootfs, group string) (uint32, error) {
	if n, err := strconv.ParseUint(group, 10, 32); err == nil {
		return uint32(n), nil
	}
	if looksNumeric(group) {
		return 0, fmt.Errorf("group %q: gid out of range; use 0 to 4294967294", group)
	}
	if path.IsAbs(group) {
		_, gid, err := ownerOf(rootfs, group)
		if err != nil {
			return 0, fmt.Errorf("group %q: %w", group, err)
		}
		return gid, nil
	}
	entries, err := readAccounts(rootfs, "/etc/group")
	for _, e := range entries {
		if len(e) >= 3 && e[0] == group {
			n, err := strconv.ParseUint(e[2], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("group %q: invalid gid %q in the image's /etc/group", group, e[2])
			}
			return uint32(n), nil
		}
	}
	if group == "root" {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("group %q: %w; use a numeric gid or add the group to the image", group, err)
	}
	return 0, fmt.Errorf("group %q not found in the image's /etc/group; use a numeric gid or add the group to the image", group)
}

// readAccounts reads a passwd or group file of the image, split into fields.
// Symlinks in the image resolve inside rootfs, never to the host's files.
func readAccounts(rootfs, file string) ([][]string, error) {
	f, err := inroot.Open(rootfs, file, unix.O_RDONLY|unix.O_NONBLOCK)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("the image has no %s", file)
		}
		return nil, fmt.Errorf("open the image's %s: %w", file, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("the image's %s is not a regular file", file)
	}
	var entries [][]string
	scanner := bufio.NewScanner(io.LimitReader(f, maxAccountFileSize))
	scanner.Buffer(make([]byte, 0, 4096), 64*1024)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		entries = append(entries, strings.Split(line, ":"))
	}
	if err := scanner.Err(); err != nil {
		return nil, fmt.Errorf("read the image's %s: %w", file, err)
	}
	return entries, nil
}

// ownerOf returns the owner of a path inside rootfs.
func ownerOf(rootfs, file string) (uint32, uint32, error) {
	f, err := inroot.Open(rootfs, file, unix.O_PATH)
	if err != nil {
		return 0, 0, fmt.Errorf("not found in the image: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, errors.New("no owner information")
	}
	return st.Uid, st.Gid, nil
}

// looksNumeric reports whether s is a number, possibly negative, which
// as a user or group can only be an id out of range.
func looksNumeric(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

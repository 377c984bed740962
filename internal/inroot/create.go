package inroot

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// MakeTarget makes sure that path exists inside root, as a directory when
// dir is true or as a regular file otherwise, and returns it opened with
// O_PATH. Missing parent directories are created with mode 0755 and a
// missing file with mode 0644. Every component resolves as in Open, so a
// symlink in the tree, absolute or relative, never leads the creation
// outside root. The result is the file to mount on, through
// /proc/self/fd/<fd>.
func MakeTarget(root *os.File, target string, dir bool) (*os.File, error) {
	return makeTarget(root, target, dir, 0)
}

func makeTarget(root *os.File, target string, dir bool, links int) (*os.File, error) {
	clean := path.Clean("/" + target)
	if clean == "/" {
		if !dir {
			return nil, fmt.Errorf("mount target %q: a file cannot be mounted on the root", target)
		}
		return OpenAt(root, "/", unix.O_PATH|unix.O_DIRECTORY)
	}
	parent, err := mkdirAll(root, path.Dir(clean))
	if err != nil {
		return nil, err
	}
	defer parent.Close()

	name := path.Base(clean)
	flags := unix.O_PATH
	if dir {
		flags |= unix.O_DIRECTORY
	}
	f, err := OpenAt(root, clean, flags)
	if errors.Is(err, os.ErrNotExist) {
		linkTarget, isLink, lerr := readLink(parent, name)
		if lerr != nil {
			return nil, fmt.Errorf("mount target %s in %s: %w", clean, root.Name(), lerr)
		}
		if isLink {
			// A dangling link: create what it points to, inside root.
			if links >= maxLinks {
				return nil, fmt.Errorf("mount target %s in %s: %w", clean, root.Name(), unix.ELOOP)
			}
			if !path.IsAbs(linkTarget) {
				linkTarget = path.Join(path.Dir(clean), linkTarget)
			}
			return makeTarget(root, linkTarget, dir, links+1)
		}
		if dir {
			err = unix.Mkdirat(int(parent.Fd()), name, 0o755)
		} else {
			var fd int
			fd, err = unix.Openat(int(parent.Fd()), name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
		}
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create mount target %s in %s: %w", clean, root.Name(), err)
		}
		f, err = OpenAt(root, clean, flags)
	}
	if dir && errors.Is(err, unix.ENOTDIR) {
		return nil, fmt.Errorf("mount target %s is not a folder in the image, but the volume is a folder", clean)
	}
	if err != nil {
		return nil, fmt.Errorf("mount target %s: %w", clean, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat mount target %s: %w", clean, err)
	}
	if !dir && !info.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("mount target %s is not a regular file (mode %s), but the volume is a file", clean, info.Mode())
	}
	return f, nil
}

// maxLinks is how many symlinks a creation follows before it fails with
// ELOOP, as path resolution in the kernel does.
const maxLinks = 40

// mkdirAll creates the directory dir inside root with every missing parent
// and returns it opened with O_PATH. A dangling symlink on the way is
// followed inside root and its target created, so an image's
// /var/run -> ../run works when /run is missing.
func mkdirAll(root *os.File, dir string) (*os.File, error) {
	cur, err := OpenAt(root, "/", unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	walked := "/"
	todo := splitPath(dir)
	links := 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		next := path.Join(walked, name)
		f, err := OpenAt(root, next, unix.O_PATH|unix.O_DIRECTORY)
		if errors.Is(err, os.ErrNotExist) {
			target, isLink, lerr := readLink(cur, name)
			if lerr != nil {
				cur.Close()
				return nil, fmt.Errorf("folder %s in %s: %w", next, root.Name(), lerr)
			}
			if isLink {
				if links++; links > maxLinks {
					cur.Close()
					return nil, fmt.Errorf("folder %s in %s: %w", next, root.Name(), unix.ELOOP)
				}
				// Resolve the link's target in place of the link.
				todo = append(splitPath(target), todo...)
				if path.IsAbs(target) {
					cur.Close()
					if cur, err = OpenAt(root, "/", unix.O_PATH|unix.O_DIRECTORY); err != nil {
						return nil, err
					}
					walked = "/"
				}
				continue
			}
			// The entry is created in the folder that walked resolved to,
			// which is inside root.
			if err := unix.Mkdirat(int(cur.Fd()), name, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
				cur.Close()
				return nil, fmt.Errorf("create %s in %s: %w", next, root.Name(), err)
			}
			f, err = OpenAt(root, next, unix.O_PATH|unix.O_DIRECTORY)
		}
		cur.Close()
		if err != nil {
			return nil, fmt.Errorf("folder %s: %w", next, err)
		}
		cur, walked = f, next
	}
	return cur, nil
}

// readLink returns the target of name in dir when name is a symlink.
func readLink(dir *os.File, name string) (string, bool, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return "", false, nil
		}
		return "", false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", false, nil
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(int(dir.Fd()), name, buf)
	if err != nil {
		return "", false, err
	}
	return string(buf[:n]), true, nil
}

// splitPath returns the components of p; ".." stays a component, which
// OpenAt resolves without leaving root.
func splitPath(p string) []string {
	var parts []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			parts = append(parts, s)
		}
	}
	return parts
}

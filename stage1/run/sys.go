package run

import "golang.org/x/sys/unix"

type syscallStat = unix.Stat_t

func fstat(fd int, st *unix.Stat_t) error { return unix.Fstat(fd, st) }

func closeOnExec(fd int) { unix.CloseOnExec(fd) }

//go:build !linux

package influxtest

import "syscall"

func procAttr() *syscall.SysProcAttr { return nil }

package xdsload

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ControlPlane is the control plane under load, as the simulator needs it.
type ControlPlane struct {
	// XDSAddress is the plaintext ADS address.
	XDSAddress string
	// SecureAddress is the TLS ADS address (weft serve --xds-address):
	// workload certificates from ProcessOptions.CADir's CA are accepted
	// there.
	SecureAddress string
	// StatusAddress serves /debug/pprof; empty skips profiles.
	StatusAddress string
	// PID is the process whose CPU time and memory are measured.
	PID int

	cmd  *exec.Cmd
	done chan error
}

// ProcessOptions start `weft serve` as a child process.
type ProcessOptions struct {
	// Binary is the weft binary.
	Binary string
	// ConfigDir is the mesh's directory (--config).
	ConfigDir string
	// CPUs, when set, pins the process with taskset (its -c list, e.g.
	// "1"); Go then sizes GOMAXPROCS to those CPUs.
	CPUs string
	// Stderr receives the process's log; nil discards it.
	Stderr io.Writer
	// ExtraArgs are appended to `weft serve`.
	ExtraArgs []string
	// CADir, when set, is the mesh CA's directory (weft serve --ca-dir),
	// e.g. one NewWorkloadCerts made.
	CADir string
}

// StartProcess runs `weft serve` with plaintext ADS and a status address
// on free loopback ports and waits until ADS accepts connections. The
// process is killed when ctx is done; Stop ends it first.
func StartProcess(ctx context.Context, o ProcessOptions) (*ControlPlane, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	xds, plain, status := ports[0], ports[1], ports[2]
	args := []string{"serve", "--config", o.ConfigDir, "--xds-address", xds, "--xds-plaintext-address", plain,
		"--status-address", status, "--log-level", "warn"}
	if o.CADir != "" {
		args = append(args, "--ca-dir", o.CADir)
	}
	args = append(args, o.ExtraArgs...)
	name := o.Binary
	if o.CPUs != "" {
		args = append([]string{"-c", o.CPUs, o.Binary}, args...)
		name = "taskset"
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = o.Stderr
	cmd.Stderr = o.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cp := &ControlPlane{XDSAddress: plain, SecureAddress: xds, StatusAddress: status, PID: cmd.Process.Pid, cmd: cmd, done: make(chan error, 1)}
	go func() { cp.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", plain, time.Second)
		if err == nil {
			_ = c.Close()
			return cp, nil
		}
		select {
		case err := <-cp.done:
			return nil, fmt.Errorf("weft serve exited before serving: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cp.Stop()
			return nil, fmt.Errorf("weft serve: plaintext ADS %s not accepting after 60s", plain)
		}
	}
}

// Stop ends a process started by StartProcess (SIGTERM, then SIGKILL after
// 10 s) and waits for it. A ControlPlane not started here is left alone.
func (cp *ControlPlane) Stop() error {
	if cp.cmd == nil {
		return nil
	}
	_ = cp.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-cp.done:
	case <-time.After(10 * time.Second):
		_ = cp.cmd.Process.Kill()
		<-cp.done
	}
	cp.cmd = nil
	return nil
}

func freePorts(n int) ([]string, error) {
	var out []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// ProcStats is a process's resource use read from /proc.
type ProcStats struct {
	CPU     time.Duration // user + system time so far
	RSS     int64         // resident set, bytes
	PeakRSS int64         // high-water mark of RSS, bytes
}

// clockTick is USER_HZ, 100 on every Linux architecture Go supports.
const clockTick = 100

// ReadProc reads pid's CPU time and memory from /proc.
func ReadProc(pid int) (ProcStats, error) {
	var s ProcStats
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("reading process %d stats: %w", pid, err)
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14 of stat
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.CPU = time.Duration(utime+stime) * time.Second / clockTick
	st, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("reading process %d status: %w", pid, err)
	}
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmRSS":
			dst = &s.RSS
		case "VmHWM":
			dst = &s.PeakRSS
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		*dst = kb << 10
	}
	return s, sc.Err()
}

// LoadAvg returns the 1-minute load average, or -1 when unknown.
func LoadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// FetchProfile GETs /debug/pprof/<name> from the control plane's status
// address into file (for "profile", query carries seconds=N).
func (cp *ControlPlane) FetchProfile(ctx context.Context, name, query, file string) error {
	if cp.StatusAddress == "" {
		return errors.New("control plane has no status address")
	}
	u := "http://" + cp.StatusAddress + "/debug/pprof/" + name
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetching %s: %s: %s", u, resp.Status, b)
	}
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		_ = out.Close()
		return fmt.Errorf("writing %s: %w", file, err)
	}
	return out.Close()
}

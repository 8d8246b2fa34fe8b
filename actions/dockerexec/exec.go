// Package dockerexec implements actions.Execer with Docker's exec API.
package dockerexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/go-logr/logr"

	"github.com/podspawn/podspawn/actions"
)

// API is the part of the Docker client that runs a connection's process.
type API interface {
	ContainerExecCreate(ctx context.Context, containerID string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	ContainerExecResize(ctx context.Context, execID string, options container.ResizeOptions) error
	ContainerStatPath(ctx context.Context, containerID, path string) (container.PathStat, error)
}

// Execer is actions.Execer on Docker.
type Execer struct {
	API API
	// Log is used unless the context carries a logger (logr.NewContext).
	Log logr.Logger
	// inContainer reports whether the host process pid runs in the
	// container; nil reads /proc (tests replace it).
	inContainer func(pid int, containerID string) (bool, error)
}

func (e Execer) logger(ctx context.Context) logr.Logger {
	if log, err := logr.FromContext(ctx); err == nil {
		return log
	}
	return e.Log
}

var _ actions.Execer = Execer{}

// PathExists stats path in the container; Docker's "not found" is false.
func (e Execer) PathExists(ctx context.Context, containerID, path string) (bool, error) {
	_, err := e.API.ContainerStatPath(ctx, containerID, path)
	switch {
	case err == nil:
		return true, nil
	case errdefs.IsNotFound(err):
		return false, nil
	}
	return false, err
}

// Exec implements actions.Execer.
func (e Execer) Exec(ctx context.Context, spec actions.ExecSpec, stdio actions.Stdio) (int, error) {
	api, log := e.API, e.logger(ctx)
	// Docker calls must outlive a hangup: the exit code and the signal to
	// the process are still needed after ctx is cancelled.
	bg := context.WithoutCancel(ctx)
	tty := spec.TTY
	created, err := api.ContainerExecCreate(bg, spec.Container, container.ExecOptions{
		User: spec.User, WorkingDir: spec.WorkDir, Env: spec.Env, Cmd: spec.Argv, Tty: tty,
		AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return -1, fmt.Errorf("starting %s in the session container: %w", spec.Kind, err)
	}
	resp, err := api.ContainerExecAttach(bg, created.ID, container.ExecAttachOptions{Tty: tty})
	if err != nil {
		return -1, fmt.Errorf("attaching to %s in the session container: %w", spec.Kind, err)
	}
	defer resp.Close()

	if tty && stdio.Resize != nil {
		stop := forwardResize(bg, api, created.ID, stdio.Resize, log)
		defer stop()
	}

	go func() {
		// EOF on our stdin is EOF for the process: half-close so that
		// "cat" and friends finish, while their output keeps flowing.
		if stdio.Stdin != nil {
			if _, err := io.Copy(resp.Conn, stdio.Stdin); err != nil {
				log.V(2).Info("Copying stdin ended", "error", err.Error())
			}
		}
		resp.CloseWrite()
	}()
	outDone := make(chan error, 1)
	go func() {
		var err error
		if tty {
			_, err = io.Copy(stdio.Stdout, resp.Reader)
		} else {
			_, err = stdcopy.StdCopy(stdio.Stdout, stdio.Stderr, resp.Reader)
		}
		outDone <- err
	}()

	hangup := func(why string) (int, error) {
		log.Info("Connection ended before its process; sending it SIGHUP", "reason", why)
		e.signalExec(bg, created.ID, log)
		resp.Close()
		return actions.HangupExitCode, nil
	}
	select {
	case err := <-outDone:
		if err != nil && isClientGone(err) {
			return hangup("client stopped reading")
		}
		if err != nil {
			log.Error(err, "Copying output failed")
		}
	case <-ctx.Done():
		return hangup(context.Cause(ctx).Error())
	}
	return e.waitExit(ctx, created.ID, log)
}

// forwardResize applies the sizes read from sizes to the exec until sizes
// closes or stop is called.
func forwardResize(ctx context.Context, api API, execID string, sizes <-chan actions.TermSize, log logr.Logger) (stop func()) {
	resize := func(s actions.TermSize) error {
		if s.Width == 0 || s.Height == 0 {
			return nil
		}
		return api.ContainerExecResize(ctx, execID, container.ResizeOptions{Height: s.Height, Width: s.Width})
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		first := true
		for {
			var s actions.TermSize
			var ok bool
			select {
			case s, ok = <-sizes:
				if !ok {
					return
				}
			case <-done:
				return
			}
			if !first {
				if err := resize(s); err != nil {
					log.V(1).Info("Resizing the terminal failed", "error", err.Error())
				}
				continue
			}
			first = false
			// The exec may not have started yet when attach returns;
			// Docker refuses to resize it until it has, so retry briefly
			// (as the docker CLI does).
			for i := 0; i < 10; i++ {
				if err := resize(s); err == nil {
					break
				} else if i == 9 {
					log.V(1).Info("Setting the terminal size failed", "error", err.Error())
				}
				time.Sleep(time.Duration(i+1) * 10 * time.Millisecond)
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// waitExit waits for the exec to be reported finished and returns its exit
// code. The output stream can end a moment before Docker records the exit.
func (e Execer) waitExit(ctx context.Context, execID string, log logr.Logger) (int, error) {
	api, bg := e.API, context.WithoutCancel(ctx)
	delay := 5 * time.Millisecond
	for {
		info, err := api.ContainerExecInspect(bg, execID)
		if err != nil {
			return -1, fmt.Errorf("reading the exit code: %w", err)
		}
		if !info.Running {
			return info.ExitCode, nil
		}
		// The process closed its output but still runs: wait for it, or
		// for the connection to end.
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			log.Info("Connection ended while its process was still running; sending it SIGHUP")
			e.signalExec(bg, execID, log)
			return actions.HangupExitCode, nil
		}
		if delay < time.Second {
			delay *= 2
		}
	}
}

func isClientGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, os.ErrClosed)
}

// Run implements actions.Execer (hooks).
func (e Execer) Run(ctx context.Context, spec actions.ExecSpec, out io.Writer) (int, error) {
	api, log := e.API, e.logger(ctx)
	bg := context.WithoutCancel(ctx)
	created, err := api.ContainerExecCreate(bg, spec.Container, container.ExecOptions{
		User: spec.User, WorkingDir: spec.WorkDir, Env: spec.Env, Cmd: spec.Argv,
		AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return -1, err
	}
	resp, err := api.ContainerExecAttach(bg, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return -1, err
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		if _, err := stdcopy.StdCopy(out, out, resp.Reader); err != nil {
			log.V(2).Info("Copying hook output ended", "error", err.Error())
		}
	}()
	// stop closes the stream and waits for the copier, so out is never
	// written after Run returns.
	stop := func() {
		resp.Close()
		<-copied
	}
	outputOpen := copied
	delay := 5 * time.Millisecond
	for {
		info, err := api.ContainerExecInspect(bg, created.ID)
		if err != nil {
			stop()
			return -1, fmt.Errorf("reading the exit code: %w", err)
		}
		// Pid 0 with the output still open: the process has not started yet.
		if !info.Running && (info.Pid != 0 || outputOpen == nil) {
			if outputOpen != nil {
				// Let the last output drain, but do not wait for a
				// background child holding the stream.
				t := time.NewTimer(time.Second)
				select {
				case <-copied:
				case <-t.C:
				}
				t.Stop()
			}
			stop()
			return info.ExitCode, nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			e.signalExec(bg, created.ID, log)
			stop()
			return -1, context.Cause(ctx)
		case <-outputOpen:
			outputOpen = nil
		case <-t.C:
			if delay < 500*time.Millisecond {
				delay *= 2
			}
		}
		t.Stop()
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"

	"github.com/podspawn/podspawn/observed/k8sobs/kubeapi"

	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/observed"
	"github.com/podspawn/podspawn/observed/k8sobs"
)

// meter counts what the API server sends: bytes on the wire (TLS and
// compression included) and response bodies as decoded by the client.
type meter struct {
	wire, body atomic.Int64
	// compressed: a response was gzip-compressed since the last reset.
	compressed  atomic.Bool
	mu          sync.Mutex
	contentType string
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// connect is podspawn's client (k8sobs.NewClient: its rate limits and
// serialization) with the meter on its connections and responses.
func connect(o options) (*k8sobs.Client, *meter, error) {
	c, err := k8sobs.NewClient(o.kubeconfig, o.namespace, nil)
	if err != nil {
		return nil, nil, err
	}
	m := &meter{}
	var d net.Dialer
	c.Config.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countingConn{conn, &m.wire}, nil
	}
	c.Config.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil {
				m.mu.Lock()
				m.contentType = resp.Header.Get("Content-Type")
				m.mu.Unlock()
				if resp.Uncompressed {
					m.compressed.Store(true)
				}
				resp.Body = countingBody{resp.Body, &m.body}
			}
			return resp, err
		})
	})
	if c.API, err = kubeapi.New(c.Config); err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

// sample is one timed list.
type sample struct {
	wall              time.Duration
	cpu               cpuUse
	wire, body, alloc int64
}

// timed runs one list and returns what it cost.
func timed(o options, m *meter, list func() ([]observed.Object, error)) (sample, []observed.Object, error) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c0, err := readCPU(o)
	if err != nil {
		return sample{}, nil, err
	}
	w0, b0 := m.wire.Load(), m.body.Load()
	t0 := time.Now()
	objs, err := list()
	s := sample{wall: time.Since(t0), wire: m.wire.Load() - w0, body: m.body.Load() - b0}
	c1, cerr := readCPU(o)
	runtime.ReadMemStats(&after)
	s.cpu, s.alloc = c1.sub(c0), int64(after.TotalAlloc-before.TotalAlloc)
	if err == nil {
		err = cerr
	}
	return s, objs, err
}

// measureList times o.passes pass lists (Lister.List, every podspawn
// object of the namespace) and as many one-key lists (Lister.ListKey,
// what each SSH connection's attach and detach do).
func measureList(ctx context.Context, o options) error {
	c, m, err := connect(o)
	if err != nil {
		return err
	}
	l := k8sobs.Lister{C: c}
	var passes, keys []sample
	m.compressed.Store(false)
	for i := range o.passes {
		s, objs, err := timed(o, m, func() ([]observed.Object, error) { return l.List(ctx) })
		if err != nil {
			return err
		}
		if got := countInstance(objs, o.instance); got != o.pods {
			return fmt.Errorf("a pass listed %d session containers of instance %s, want %d", got, o.instance, o.pods)
		}
		passes = append(passes, s)
		k := desired.SessionKey{User: fmt.Sprintf("scale%05d", i*o.pods/o.passes)}
		s, objs, err = timed(o, m, func() ([]observed.Object, error) { return l.ListKey(ctx, k) })
		if err != nil {
			return err
		}
		if got := countInstance(objs, o.instance); got != 1 {
			return fmt.Errorf("the list of key %s found %d session containers, want 1", k, got)
		}
		keys = append(keys, s)
	}
	enc := "uncompressed"
	if m.compressed.Load() {
		enc = "gzip"
	}
	fmt.Printf("%d pods: pass list (Lister.List), medians of %d: %s; %s on the wire (%s), %s decoded (%s), %s allocated\n",
		o.pods, len(passes), costs(passes), mib(med(passes, func(s sample) int64 { return s.wire })), enc,
		mib(med(passes, func(s sample) int64 { return s.body })), m.contentType, mib(med(passes, func(s sample) int64 { return s.alloc })))
	fmt.Printf("%d pods: one key's list (Lister.ListKey), medians of %d: %s; %s on the wire\n",
		o.pods, len(keys), costs(keys), kib(med(keys, func(s sample) int64 { return s.wire })))
	return nil
}

// costs are the medians of the wall and CPU times of samples.
func costs(s []sample) string {
	walls := func(s sample) int64 { return int64(s.wall) }
	return fmt.Sprintf("wall %s (min %s, max %s), CPU %s client, %s kube-apiserver, %s etcd",
		ms(time.Duration(med(s, walls))), ms(time.Duration(slices.Min(project(s, walls)))), ms(time.Duration(slices.Max(project(s, walls)))),
		ms(time.Duration(med(s, func(s sample) int64 { return int64(s.cpu.self) }))),
		ms(time.Duration(med(s, func(s sample) int64 { return int64(s.cpu.apiserver) }))),
		ms(time.Duration(med(s, func(s sample) int64 { return int64(s.cpu.etcd) }))))
}

func project(s []sample, f func(sample) int64) []int64 {
	out := make([]int64, len(s))
	for i := range s {
		out[i] = f(s[i])
	}
	return out
}

// med is the median of f over s (the upper one of an even count).
func med(s []sample, f func(sample) int64) int64 {
	v := project(s, f)
	slices.Sort(v)
	return v[len(v)/2]
}

func countInstance(objs []observed.Object, instance string) int {
	n := 0
	for _, o := range objs {
		if o.Kind == observed.KindContainer && o.Labels[observed.LabelInstance] == instance {
			n++
		}
	}
	return n
}

// measureWatch starts podspawn's informer-based watcher and waits until
// every Pod arrived as an add (the informer's initial list, delivered),
// then reads the Go heap it holds against a baseline taken before.
func measureWatch(ctx context.Context, o options) error {
	c, m, err := connect(o)
	if err != nil {
		return err
	}
	base := heapAfterGC()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c0, err := readCPU(o)
	if err != nil {
		return err
	}
	w0 := m.wire.Load()
	t0 := time.Now()
	changes, errs := k8sobs.NewWatcher(c, o.instance, logr.Discard()).Watch(ctx, time.Time{})
	adds := 0
	for adds < o.pods {
		select {
		case ch := <-changes:
			if ch.Kind == "pod" && ch.Action == "add" {
				adds++
			}
		case err := <-errs:
			return err
		case <-ctx.Done():
			return fmt.Errorf("%d of %d pods delivered by the watcher: %w", adds, o.pods, context.Cause(ctx))
		}
	}
	synced, wire := time.Since(t0), m.wire.Load()-w0
	c1, err := readCPU(o)
	if err != nil {
		return err
	}
	cpu := c1.sub(c0)
	// The daemon keeps reading changes; so does this, until it exits.
	go func() {
		for {
			select {
			case <-changes:
			case <-ctx.Done():
				return
			}
		}
	}()
	held := heapAfterGC()
	inuse, alloc := int64(held.HeapInuse)-int64(base.HeapInuse), int64(held.HeapAlloc)-int64(base.HeapAlloc)
	// Stopping the informers makes the reflectors log their cancelled
	// watches; that is not news.
	klog.SetLogger(logr.Discard())
	fmt.Printf("%d pods: watcher (k8sobs.Watcher) synced in %s wall, CPU %s client, %s kube-apiserver, %s etcd; %s on the wire; "+
		"Go heap held once synced: %s in use, %s live (%s per pod)\n",
		o.pods, ms(synced), ms(cpu.self), ms(cpu.apiserver), ms(cpu.etcd), mib(wire), mib(inuse), mib(alloc), kib(alloc/int64(o.pods)))
	return nil
}

// heapAfterGC reads the heap once garbage is collected (twice: the first
// cycle may leave finalized objects for the second).
func heapAfterGC() runtime.MemStats {
	var s runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&s)
	return s
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
func mib(n int64) string        { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }
func kib(n int64) string        { return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10)) }

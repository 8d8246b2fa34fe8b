package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
)

// humanSink is the logr sink of one-shot commands at the default
// verbosity. A command prints its results on stdout; on stderr a person
// should see only what went wrong, in plain words. So the sink drops every
// Info record (per-action progress is for -v, which logs through zap as the
// daemon does) and prints each Error record as one line:
//
//	Error: <msg>: <err> (key: value, ...)
//	Warning: <msg> (key: value, ...)
//
// logr has no warning level: Error with a nil error is podspawn's warning
// (the blast-radius guard holding removals, say). A value that spans lines
// (a build's output) follows the line as an indented block.
type humanSink struct {
	out    *syncWriter
	name   string
	values []any
}

// syncWriter serialises the lines of sinks derived from one another: the
// controller reconciles keys concurrently.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func newHumanLogger(w io.Writer) logr.Logger {
	return logr.New(&humanSink{out: &syncWriter{w: w}})
}

func (s *humanSink) Init(logr.RuntimeInfo) {}

// Enabled reports false for every Info level: at the default verbosity no
// progress is printed. Error records do not ask.
func (s *humanSink) Enabled(int) bool { return false }

func (s *humanSink) Info(int, string, ...any) {}

func (s *humanSink) Error(err error, msg string, keysAndValues ...any) {
	var b strings.Builder
	if err == nil {
		b.WriteString("Warning: ")
	} else {
		b.WriteString("Error: ")
	}
	if s.name != "" {
		b.WriteString(s.name + ": ")
	}
	b.WriteString(msg)
	if err != nil {
		b.WriteString(": " + err.Error())
	}
	inline, blocks := humanValues(append(slices.Clip(s.values), keysAndValues...))
	if len(inline) > 0 {
		b.WriteString(" (" + strings.Join(inline, ", ") + ")")
	}
	b.WriteString("\n")
	for _, blk := range blocks {
		b.WriteString(blk)
	}
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	io.WriteString(s.out.w, b.String())
}

func (s *humanSink) WithValues(keysAndValues ...any) logr.LogSink {
	c := *s
	c.values = append(slices.Clip(s.values), keysAndValues...)
	return &c
}

func (s *humanSink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "/" + name
	}
	c.name = name
	return &c
}

// humanValues renders key/value pairs as "key: value"; values of several
// lines become indented blocks instead.
func humanValues(kv []any) (inline, blocks []string) {
	for i := 0; i < len(kv); i += 2 {
		key := fmt.Sprint(kv[i])
		val := "(missing)"
		if i+1 < len(kv) {
			val = humanValue(kv[i+1])
		}
		if strings.Contains(val, "\n") {
			var b strings.Builder
			b.WriteString("  " + key + ":\n")
			for _, l := range strings.Split(strings.TrimRight(val, "\n"), "\n") {
				b.WriteString("    " + l + "\n")
			}
			blocks = append(blocks, b.String())
			continue
		}
		inline = append(inline, key+": "+val)
	}
	return inline, blocks
}

func humanValue(v any) string {
	switch x := v.(type) {
	case nil:
		return "<nil>"
	case string:
		if x == "" {
			return `""`
		}
		return x
	case logr.Marshaler:
		return humanValue(x.MarshalLog())
	}
	// fmt calls Error and String (and survives their panics on nil).
	return fmt.Sprint(v)
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/podspawn/podspawn/actions"
	"github.com/podspawn/podspawn/controller"
	"github.com/podspawn/podspawn/desired"
	"github.com/podspawn/podspawn/reconcile"
)

// PlanFormatVersion is bumped on any incompatible change of the JSON plan.
const PlanFormatVersion = "1"

func keyLabel(k desired.SessionKey) string {
	if k == desired.Unattributed {
		return "(unattributed)"
	}
	return k.String()
}

// renderPlanText prints one line per action with its reason and detail,
// the skipped objects, and a summary line.
func renderPlanText(w io.Writer, p reconcile.Plan) {
	if p.Empty() {
		fmt.Fprintln(w, "No changes. Docker matches the session database.")
	} else {
		fmt.Fprintf(w, "podspawn will perform the following actions (now %s):\n\n", p.Now.UTC().Format(time.RFC3339))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, a := range p.Actions {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s: %s\n", a.Kind, keyLabel(a.Key), a.Target, a.Reason, a.Detail)
		}
		tw.Flush()
	}
	if len(p.Skipped) > 0 {
		fmt.Fprintln(w, "\nLeft alone:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for i, s := range p.Skipped {
			if i == maxSkipLines {
				break
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s %s\t%s: %s\n", "skip", keyLabel(s.Key), s.ObjectKind, s.Target, s.Reason, s.Detail)
		}
		tw.Flush()
		if rest := len(p.Skipped) - maxSkipLines; rest > 0 {
			fmt.Fprintf(w, "  ... and %d more left alone (%s); -o json lists them all\n", rest, skipReasons(p.Skipped[maxSkipLines:]))
		}
	}
	renderHeld(w, p.Held, p.Holds)
	s := controller.Summarize(p)
	held := ""
	if s.Held > 0 {
		held = fmt.Sprintf(", %d held", s.Held)
	}
	fmt.Fprintf(w, "\nPlan: %d to create, %d to change, %d to remove. %d %s unchanged, %d skipped%s.\n",
		s.Create, s.Change, s.Remove, s.Unchanged, plural(s.Unchanged, "session", "sessions"), s.Skipped, held)
}

// renderHeld lists what the blast-radius guard kept back, why, and how to
// proceed.
func renderHeld(w io.Writer, held []reconcile.Action, holds []reconcile.Hold) {
	if len(held) == 0 {
		return
	}
	fmt.Fprintln(w, "\nHeld by the blast-radius guard (not done):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, a := range held {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s: %s\n", a.Kind, keyLabel(a.Key), a.Target, a.Reason, a.Detail)
	}
	tw.Flush()
	for _, h := range holds {
		fmt.Fprintf(w, "  Why (%s): %s.\n", h.Reason, h.Detail)
	}
	fmt.Fprintf(w, "  To proceed: %s.\n", reconcile.HoldFix)
}

// clockHeld lists the sessions whose teardown the plan held because the
// wall clock just stepped forward.
func clockHeld(p reconcile.Plan) []reconcile.Skip {
	var out []reconcile.Skip
	for _, s := range p.Skipped {
		if s.Reason == reconcile.ReasonClockStep {
			out = append(out, s)
		}
	}
	return out
}

// renderClockHeld lists the teardowns held after a forward step of the
// wall clock, and when they go ahead.
func renderClockHeld(w io.Writer, held []reconcile.Skip) {
	if len(held) == 0 {
		return
	}
	fmt.Fprintln(w, "\nHeld after a forward step of the wall clock (not done):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, s := range held {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s: %s\n", "teardown", keyLabel(s.Key), s.Target, s.Reason, s.Detail)
	}
	tw.Flush()
	fmt.Fprintf(w, "  Why (%s): deadlines are wall-clock times, and the wall clock moved further than the time the system was up; sessions with live connections are kept until a pass on a clock that did not step again confirms.\n", reconcile.ReasonClockStep)
	fmt.Fprintln(w, "  To proceed: nothing to do; the next pass after that time tears them down if their deadline still holds.")
}

// maxSkipLines keeps a plan readable on a host shared with another
// installation, whose every object is listed as foreign.
const maxSkipLines = 20

// skipReasons counts skips by reason, in order of first appearance.
func skipReasons(skips []reconcile.Skip) string {
	counts := map[reconcile.Reason]int{}
	var order []reconcile.Reason
	for _, s := range skips {
		if counts[s.Reason] == 0 {
			order = append(order, s.Reason)
		}
		counts[s.Reason]++
	}
	parts := make([]string, len(order))
	for i, r := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[r], r)
	}
	return strings.Join(parts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

type jsonPlan struct {
	FormatVersion string             `json:"format_version"`
	Now           time.Time          `json:"now"`
	Wake          *time.Time         `json:"wake,omitempty"`
	Summary       controller.Summary `json:"summary"`
	Actions       []reconcile.Action `json:"actions"`
	Skipped       []reconcile.Skip   `json:"skipped"`
	Held          []reconcile.Action `json:"held,omitempty"`
	Holds         []reconcile.Hold   `json:"holds,omitempty"`
}

func toJSONPlan(p reconcile.Plan) jsonPlan {
	jp := jsonPlan{FormatVersion: PlanFormatVersion, Now: p.Now.UTC(), Summary: controller.Summarize(p), Actions: p.Actions, Skipped: p.Skipped, Held: p.Held, Holds: p.Holds}
	if jp.Actions == nil {
		jp.Actions = []reconcile.Action{}
	}
	if jp.Skipped == nil {
		jp.Skipped = []reconcile.Skip{}
	}
	if !p.Wake.IsZero() {
		w := p.Wake.UTC()
		jp.Wake = &w
	}
	return jp
}

func renderPlanJSON(w io.Writer, p reconcile.Plan) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(toJSONPlan(p))
}

// verbPast describes an executed action for the pass report.
func verbPast(a reconcile.Action) string {
	switch a.Kind {
	case reconcile.KindRemoveContainer:
		return "removed container " + a.Target
	case reconcile.KindRemoveNetwork:
		return "removed network " + a.Target
	case reconcile.KindRemoveVolume:
		return "removed volume " + a.Target
	case reconcile.KindDeleteSession:
		return "deleted session record " + keyLabel(a.Key)
	case reconcile.KindMarkTerminating:
		return "marked session " + keyLabel(a.Key) + " for removal"
	case reconcile.KindCreateNetwork:
		return "created network " + a.Target
	case reconcile.KindCreateVolume:
		return "created volume " + a.Target
	case reconcile.KindCreateContainer:
		if a.Restart != nil {
			return fmt.Sprintf("started container %s again (restart %d)", a.Target, a.Restart.Count)
		}
		return "created container " + a.Target
	case reconcile.KindMarkRunning:
		return "marked session " + keyLabel(a.Key) + " running"
	case reconcile.KindStartGrace:
		return "started grace period of " + keyLabel(a.Key)
	case reconcile.KindCancelGrace:
		return "cancelled grace period of " + keyLabel(a.Key)
	case reconcile.KindResetRestarts:
		return "reset the restart count of " + keyLabel(a.Key)
	case reconcile.KindWarn:
		return fmt.Sprintf("warned %d connection(s) of %s, %s before its max lifetime", len(a.Leases), keyLabel(a.Key), a.Before)
	case reconcile.KindReleaseLease:
		return fmt.Sprintf("released dead connection %d of %s", a.LeaseID, keyLabel(a.Key))
	case reconcile.KindKillLeaseProcesses:
		return fmt.Sprintf("killed the processes of dead connection %d in container %s", a.LeaseID, a.Target)
	}
	return string(a.Kind) + " " + a.Target
}

// renderReportText prints what a pass did: one line per change of the
// host access rules and per changed action, what the guard held, and a
// summary.
func renderReportText(w io.Writer, rep controller.Report, hostRules []string) {
	for _, c := range hostRules {
		fmt.Fprintf(w, "changed host access rules (%s)\n", c)
	}
	for _, k := range rep.Keys {
		for _, r := range k.Results {
			if r.Err != nil || r.Outcome != actions.Changed {
				continue
			}
			fmt.Fprintf(w, "%s (%s: %s)\n", verbPast(r.Action), r.Action.Reason, r.Action.Detail)
		}
	}
	held, holds := rep.Held()
	renderHeld(w, held, holds)
	renderClockHeld(w, clockHeld(rep.Plan))
	fmt.Fprintln(w, "Cleanup pass complete.")
	fmt.Fprintln(w, summarize(rep, hostRules))
}

// passSummary counts what a pass did, as a person reads it after the pass
// (its String) and as -o json reports it.
type passSummary struct {
	Removed objectCounts `json:"removed"`
	Created objectCounts `json:"created"`
	// Changed counts the sessions whose record or connections the pass
	// changed (a grace period started or cancelled, a dead connection
	// released, marked for removal), other than those whose record it
	// deleted: those count in Removed.
	Changed int `json:"changed"`
	// Held counts the actions the blast-radius guard held and the
	// sessions whose teardown a forward clock step held.
	Held int `json:"held"`
	// Failed counts the sessions whose reconcile failed.
	Failed int `json:"failed"`
	// HostAccessRules counts the changes made to the host access rules
	// (one per IP family rewritten).
	HostAccessRules int `json:"host_access_rules"`
}

// objectCounts counts objects by kind; SessionRecords are rows of the
// state database.
type objectCounts struct {
	Containers     int `json:"containers"`
	Networks       int `json:"networks"`
	Volumes        int `json:"volumes"`
	SessionRecords int `json:"session_records"`
}

// summarize counts the actions of rep that changed something, and the
// changes to the host access rules.
func summarize(rep controller.Report, hostRules []string) passSummary {
	s := passSummary{HostAccessRules: len(hostRules)}
	changed := map[desired.SessionKey]bool{}
	deleted := map[desired.SessionKey]bool{}
	for _, k := range rep.Keys {
		for _, r := range k.Results {
			if r.Err != nil || r.Outcome != actions.Changed {
				continue
			}
			switch r.Action.Kind {
			case reconcile.KindRemoveContainer:
				s.Removed.Containers++
			case reconcile.KindRemoveNetwork:
				s.Removed.Networks++
			case reconcile.KindRemoveVolume:
				s.Removed.Volumes++
			case reconcile.KindDeleteSession:
				s.Removed.SessionRecords++
				deleted[r.Action.Key] = true
			case reconcile.KindCreateContainer:
				s.Created.Containers++
			case reconcile.KindCreateNetwork:
				s.Created.Networks++
			case reconcile.KindCreateVolume:
				s.Created.Volumes++
			default:
				changed[r.Action.Key] = true
			}
		}
	}
	for k := range changed {
		if !deleted[k] {
			s.Changed++
		}
	}
	held, _ := rep.Held()
	s.Held, s.Failed = len(held)+len(clockHeld(rep.Plan)), len(rep.Failed())
	return s
}

// String is the summary line: "Removed 3 containers, 3 networks; 1 held; 0 failed."
func (s passSummary) String() string {
	var clauses []string
	if p := s.Removed.String(); p != "" {
		clauses = append(clauses, "removed "+p)
	}
	if p := s.Created.String(); p != "" {
		clauses = append(clauses, "created "+p)
	}
	if s.Changed > 0 {
		clauses = append(clauses, fmt.Sprintf("changed %d %s", s.Changed, plural(s.Changed, "session", "sessions")))
	}
	if s.HostAccessRules > 0 {
		clauses = append(clauses, "changed the host access rules")
	}
	if len(clauses) == 0 {
		clauses = append(clauses, "no changes")
	}
	clauses = append(clauses, fmt.Sprintf("%d held", s.Held), fmt.Sprintf("%d failed", s.Failed))
	line := strings.Join(clauses, "; ")
	return strings.ToUpper(line[:1]) + line[1:] + "."
}

// String lists the non-zero counts: "3 containers, 1 network".
func (c objectCounts) String() string {
	var parts []string
	for _, n := range []struct {
		count     int
		one, many string
	}{
		{c.Containers, "container", "containers"},
		{c.Networks, "network", "networks"},
		{c.Volumes, "volume", "volumes"},
		{c.SessionRecords, "session record", "session records"},
	} {
		if n.count > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n.count, plural(n.count, n.one, n.many)))
		}
	}
	return strings.Join(parts, ", ")
}

type jsonResult struct {
	Action  reconcile.Action `json:"action"`
	Outcome string           `json:"outcome"`
	Error   string           `json:"error,omitempty"`
}

type jsonReport struct {
	FormatVersion string             `json:"format_version"`
	Plan          jsonPlan           `json:"plan"`
	Results       []jsonResult       `json:"results"`
	Failed        []jsonFailed       `json:"failed"`
	Held          []reconcile.Action `json:"held,omitempty"`
	Holds         []reconcile.Hold   `json:"holds,omitempty"`
	// HeldByClockStep are the sessions kept after a forward clock step.
	HeldByClockStep []reconcile.Skip `json:"held_by_clock_step,omitempty"`
	// HostAccessRules lists the changes made to the host access rules.
	HostAccessRules []string `json:"host_access_rules_changed,omitempty"`
	// Summary is what the text report's last line says.
	Summary passSummary `json:"summary"`
}

type jsonFailed struct {
	Key   desired.SessionKey `json:"key"`
	Error string             `json:"error"`
}

func renderReportJSON(w io.Writer, rep controller.Report, hostRules []string) error {
	jr := jsonReport{FormatVersion: PlanFormatVersion, Plan: toJSONPlan(rep.Plan), Results: []jsonResult{}, Failed: []jsonFailed{}}
	for _, r := range rep.Results() {
		res := jsonResult{Action: r.Action, Outcome: string(r.Outcome)}
		if r.Err != nil {
			res.Error = r.Err.Error()
		}
		jr.Results = append(jr.Results, res)
	}
	for _, k := range rep.Failed() {
		jr.Failed = append(jr.Failed, jsonFailed{Key: k.Key, Error: k.Err.Error()})
	}
	jr.Held, jr.Holds = rep.Held()
	jr.HeldByClockStep = clockHeld(rep.Plan)
	jr.HostAccessRules = hostRules
	jr.Summary = summarize(rep, hostRules)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jr)
}

// failureError summarises failed keys and held removals for stderr.
func failureError(rep controller.Report) error {
	failed := rep.Failed()
	held, holds := rep.Held()
	clock := clockHeld(rep.Plan)
	if len(failed) == 0 && len(held) == 0 && len(clock) == 0 {
		return nil
	}
	var b strings.Builder
	if len(failed) > 0 {
		fmt.Fprintf(&b, "%d %s failed; the next pass retries them:", len(failed), plural(len(failed), "session", "sessions"))
		for _, k := range failed {
			fmt.Fprintf(&b, "\n  %s: %v", keyLabel(k.Key), k.Err)
		}
	}
	if len(held) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%d %s held by the blast-radius guard:", len(held), plural(len(held), "action", "actions"))
		for _, h := range holds {
			fmt.Fprintf(&b, "\n  %s: %s", h.Reason, h.Detail)
		}
		fmt.Fprintf(&b, "\n  %s", reconcile.HoldFix)
	}
	if len(clock) > 0 {
		if b.Len() > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%d %s held after a forward step of the wall clock; the next pass a minute later confirms", len(clock), plural(len(clock), "teardown", "teardowns"))
	}
	return &ExitError{Code: 1, Err: fmt.Errorf("%s", b.String())}
}

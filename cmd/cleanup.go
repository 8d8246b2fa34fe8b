package main

import (
	"fmt"
)

// CleanupCmd is one reconcile pass (the daemon mode is in cleanup_daemon.go).
type CleanupCmd struct {
	DryRun  bool   `help:"Print the plan and change nothing."`
	Output  string `help:"Output format: text or json." enum:"text,json" default:"text" short:"o"`
	Workers int    `help:"How many sessions to reconcile at once." default:"4"`
}

// Run executes one pass, or prints its plan with --dry-run. It exits
// non-zero when any action failed.
func (c *CleanupCmd) Run(a *App) error {
	ctx, cancel := signalContext()
	defer cancel()
	if c.Workers < 1 {
		return fmt.Errorf("invalid --workers %d: must be at least 1", c.Workers)
	}
	ctrl, err := a.Controller(ctx, ControllerOptions{DryRun: c.DryRun, Workers: c.Workers})
	if err != nil {
		return err
	}
	if c.DryRun {
		plan, err := ctrl.Plan(ctx)
		if err != nil {
			return err
		}
		if c.Output == "json" {
			return renderPlanJSON(a.Stdout, plan)
		}
		renderPlanText(a.Stdout, plan)
		return nil
	}
	rep, err := ctrl.ReconcileOnce(ctx)
	if err != nil {
		return err
	}
	a.Log.V(1).Info("Cleanup pass finished", rep.Plan.LogValues()...)
	if c.Output == "json" {
		if err := renderReportJSON(a.Stdout, rep); err != nil {
			return err
		}
		return failureError(rep)
	}
	created, changed, removed, failed := renderReportText(a.Stdout, rep)
	fmt.Fprintln(a.Stdout, "Cleanup pass complete.")
	fmt.Fprintf(a.Stdout, "%d removed, %d created, %d changed, %d failed.\n", removed, created, changed, failed)
	return failureError(rep)
}

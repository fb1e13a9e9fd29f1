package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/repstream/repstream/cdc/doctor"
)

func init() {
	subcommands = append(subcommands, dbaPublicationCommand, dbaSlotCommand)
}

// dbaCommand is a DBA subcommand that loads the configuration, then runs fn.
func dbaCommand(use, short string, fn func(cmd *cobra.Command, in doctor.Input) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs}
	path := configFlags(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadFor(cmd, *path)
		if err != nil {
			return err
		}
		return fn(cmd, doctorInput(cfg, nil))
	}
	return cmd
}

func dbaPublicationCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "publication sql|create", Short: "Print or create the publication repstream needs"}
	cmd.AddCommand(dbaCommand("sql", "Print the publication's DDL for review: only the columns the sources need, plus each key",
		func(cmd *cobra.Command, in doctor.Input) error {
			p, err := doctor.PlanPublication(cmd.Context(), in)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), p.SQL())
			return nil
		}))
	cmd.AddCommand(dbaCommand("create", "Create the publication `publication sql` prints; refuses if it exists",
		func(cmd *cobra.Command, in doctor.Input) error {
			p, err := doctor.CreatePublication(cmd.Context(), in)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created publication %s:\n%s\n", in.Publication, p.DDL)
			return nil
		}))
	return cmd
}

func dbaSlotCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "slot status|drop", Short: "Show or drop repstream's replication slot"}
	var asJSON, yes, force bool
	status := dbaCommand("status", "Show the slot: plugin, active PID, LSNs, wal_status, retained and lag bytes, safe_wal_size, and why WAL is retained (exit 1 if it does not exist, 2 if it is lost)",
		func(cmd *cobra.Command, in doctor.Input) error {
			st, err := doctor.ReadSlot(cmd.Context(), in)
			if err != nil {
				return err
			}
			if asJSON {
				err = st.WriteJSON(cmd.OutOrStdout())
			} else {
				err = st.WriteText(cmd.OutOrStdout())
			}
			if err == nil && !st.Exists {
				return exitError{code: 1}
			}
			if err == nil && st.Lost() {
				return exitError{code: 2}
			}
			return err
		})
	status.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	drop := dbaCommand("drop", "Drop the slot (needs --yes): the next serve starts a new epoch and clients resync",
		func(cmd *cobra.Command, in doctor.Input) error {
			res, err := doctor.DropSlot(cmd.Context(), in, doctor.DropOptions{Yes: yes, Force: force})
			out := cmd.OutOrStdout()
			if res.Terminated != nil {
				fmt.Fprintf(out, "terminated %s, which held slot %s\n", res.Terminated, in.Slot)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "dropped slot %s (confirmed up to %s); the next serve starts a new epoch and clients resync\n", in.Slot, res.Slot.ConfirmedFlushLSN)
			return nil
		})
	drop.Flags().BoolVar(&yes, "yes", false, "confirm: repstream loses its position and every client resyncs under a new epoch")
	drop.Flags().BoolVar(&force, "force", false, "terminate the backend holding the slot first")
	cmd.AddCommand(status, drop)
	return cmd
}

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/repstream/repstream/sql/migrations"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{Use: "migrate up|down|version", Short: "Apply, revert or show repstream's schema migrations",
			Args: cobra.ExactArgs(1), ValidArgs: []string{"up", "down", "version"}}
		path := configFlags(cmd)
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			cfg, err := loadFor(cmd, *path)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch args[0] {
			case "up":
				if err := migrations.Up(cfg.storeURL()); err != nil {
					return err
				}
			case "down":
				if err := migrations.Down(cfg.storeURL()); err != nil {
					return err
				}
			case "version":
			default:
				return fmt.Errorf("migrate: unknown action %q: use up, down or version", args[0])
			}
			v, dirty, latest, err := migrations.Version(cfg.storeURL())
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "schema version %d of %d", v, latest)
			if dirty {
				fmt.Fprint(out, " (dirty: a migration failed half-way; fix it, then force the version)")
			}
			fmt.Fprintln(out)
			return nil
		}
		return cmd
	})
}

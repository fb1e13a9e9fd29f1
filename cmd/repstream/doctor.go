package main

import (
	"github.com/spf13/cobra"

	"github.com/repstream/repstream/cdc/doctor"
)

func init() {
	subcommands = append(subcommands, func() *cobra.Command {
		cmd := &cobra.Command{Use: "doctor", Args: cobra.NoArgs,
			Short: "Check the database for everything serve needs and print the fix for each problem",
			Long: "doctor checks the server settings, the role, the source tables, the publication, the slot and\n" +
				"repstream's schema. It only reads. Exit code: 0 when nothing fails (warnings allowed),\n" +
				"2 when a check fails, 1 when doctor itself could not run (it cannot connect, say)."}
		path := configFlags(cmd)
		asJSON := cmd.Flags().Bool("json", false, `print {"ok":bool,"checks":[{"name","status","message","fix"}]}`)
		cmd.RunE = func(cmd *cobra.Command, _ []string) error {
			rep := doctor.Run(cmd.Context(), doctorInput(loadFor(cmd, *path)))
			var err error
			if *asJSON {
				err = rep.WriteJSON(cmd.OutOrStdout())
			} else {
				err = rep.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if code := rep.ExitCode(); code != doctor.ExitOK {
				return exitError{code: code}
			}
			return nil
		}
		return cmd
	})
}

// doctorInput maps the loaded configuration onto doctor's input; a
// configuration that did not load becomes findings naming its keys, and
// one that loaded with bad keys (a misspelt one, say) is still checked
// against the database.
func doctorInput(cfg *Config, err error) doctor.Input {
	if cfg == nil {
		return doctor.Input{ConfigErr: err}
	}
	return doctor.Input{
		DatabaseURL: cfg.DatabaseURL, StoreURL: cfg.Store.DatabaseURL, Publication: cfg.Publication, Slot: cfg.Slot,
		CreatePublication: cfg.CreatePublication, Sources: cfg.Sources, Prior: cfg.Reputation,
		RetainedWarnBytes: cfg.Alerts.RetainedWALBytes, ConfigErr: err,
	}
}

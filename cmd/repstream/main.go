// Command repstream turns the reviews and ratings applications already
// write to Postgres into live reputation scores streamed over WebSocket.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// subcommands are added by each command's file in init, so files stay independent.
var subcommands []func() *cobra.Command

func main() {
	root := &cobra.Command{
		Use:           "repstream",
		Short:         "Postgres-native reputation change streaming",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, c := range subcommands {
		root.AddCommand(c())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := root.ExecuteContext(ctx); err != nil {
		var ex exitError
		if errors.As(err, &ex) {
			if ex.msg != "" {
				fmt.Fprintln(os.Stderr, "repstream:", ex.msg)
			}
			os.Exit(ex.code)
		}
		fmt.Fprintln(os.Stderr, "repstream:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a specific code (doctor's findings, say).
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// configFlags adds the flags every command that reads the configuration takes.
func configFlags(cmd *cobra.Command) *string {
	path := cmd.Flags().String("config", "", "configuration file (YAML); every key may also come from REPSTREAM_* environment variables")
	cmd.Flags().String("database-url", "", "Postgres URL (overrides database_url and DATABASE_URL)")
	cmd.Flags().String("slot", "", "replication slot name")
	cmd.Flags().String("publication", "", "publication name")
	cmd.Flags().String("log-format", "", "log format: text or json (key log.format)")
	cmd.Flags().String("log-level", "", "log level: debug, info, warn, error (key log.level)")
	return path
}

// loadFor loads the configuration for cmd from its --config file, the
// environment and its flags.
func loadFor(cmd *cobra.Command, path string) (*Config, error) {
	return loadConfig(path, cmd.Flags())
}

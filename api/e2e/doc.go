// Package e2e holds the end-to-end tests of the streaming API against a
// real Postgres: replication, the pipeline's store and the hub together.
package e2e

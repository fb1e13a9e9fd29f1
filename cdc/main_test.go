package cdc_test

import (
	"os"
	"testing"

	"github.com/repstream/repstream/cdc/localpg"
)

func TestMain(m *testing.M) { os.Exit(localpg.Main(m)) }

package agentwire

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// fuzzMinimizeTime is how long a fuzz worker minimizes one input when
// -fuzzminimizetime is not given (Go's default: 60 s).
//
// Go minimizes every input that widens coverage, not only failing ones, and
// its minimizer tries removing every span of the input: quadratic in its
// length, some 200,000 runs of the target for a 600-byte frame script. For
// that long the worker fuzzes nothing and reports no execs, so a bounded
// run (./test, -fuzztime 10s) stalls at "0/sec" until its deadline. One
// second keeps the linear passes (cutting the tail, removing single bytes)
// and leaves each worker fuzzing most of the time. A failing input is still
// written whole or part minimized; minimize it further with an explicit
// -fuzzminimizetime.
const fuzzMinimizeTime = "1s"

func TestMain(m *testing.M) {
	flag.Parse()
	if err := boundFuzzMinimization(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// boundFuzzMinimization sets -test.fuzzminimizetime to fuzzMinimizeTime when
// fuzzing without one (the coordinator and its workers run this same
// binary with the same flags, so both see the bound).
func boundFuzzMinimization() error {
	if f := flag.Lookup("test.fuzz"); f == nil || f.Value.String() == "" {
		return nil
	}
	given := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == "test.fuzzminimizetime" {
			given = true
		}
	})
	if given {
		return nil
	}
	return flag.Set("test.fuzzminimizetime", fuzzMinimizeTime)
}

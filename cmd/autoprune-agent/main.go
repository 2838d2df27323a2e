// Command autoprune-agent is the latency agent alone: the same server as "autoprune
// agent", in a binary that links only what measuring needs, for phones and boards.
//
//	CGO_ENABLED=0 GOOS=android GOARCH=arm64 go build ./cmd/autoprune-agent
//	autoprune-agent --help
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/autoprune/autoprune/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := agent.Main(ctx, "autoprune-agent", os.Args[1:], os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "autoprune-agent: interrupted")
		os.Exit(130)
	}
	fmt.Fprintf(os.Stderr, "autoprune-agent: %v\n", err)
	if errors.Is(err, agent.ErrUsage) {
		os.Exit(2)
	}
	os.Exit(1)
}

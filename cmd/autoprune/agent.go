package main

import (
	"context"
	"errors"
	"io"
	"net/url"

	"github.com/autoprune/autoprune/agent"
	"github.com/autoprune/autoprune/eval"
)

func init() {
	register(&command{name: "agent", summary: "serve latency measurements on this device (run it on the phone or board)", run: runAgent})
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	err := agent.Main(ctx, "autoprune agent", args, stderr)
	if errors.Is(err, agent.ErrUsage) {
		return asUsage(err)
	}
	return err
}

// remoteMeter builds the meter of a command's --agent and --token flags; a malformed URL
// is a usage error.
func remoteMeter(agentURL, token string) (*eval.RemoteMeter, error) {
	u, err := url.Parse(agentURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--agent %q: want the agent's URL, such as http://127.0.0.1:7070", agentURL)
	}
	return &eval.RemoteMeter{URL: agentURL, Token: agent.Token(token)}, nil
}

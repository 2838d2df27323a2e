package search

// The structured events of a search: the "event" attribute of the records it logs to
// Options.Logger, with the attributes each carries, for a display or a program that follows
// a search ("autoprune search --json" prints them as JSON lines). Records without an event
// attribute are messages for people.
const (
	// EventTrain is a step of the base model's training: epoch, epochs, step, steps, loss,
	// img_per_s.
	EventTrain = "train"
	// EventFinetune is the progress of a fine-tune, at Debug level: what ("trial 7",
	// "candidate trial 7", "final"), step, steps.
	EventFinetune = "finetune"
	// EventRound is a trial's accuracy report to the early stopper, at Debug level: trial,
	// round, rounds, acc.
	EventRound = "round"
	// EventTrial is a finished trial: trial, done, total, state (complete, pruned, fail),
	// wall_s; score, acc, rel_latency and latency_ms when it was measured; error when it
	// failed; best_trial, best_score, best_acc and best_rel_latency, the best complete trial
	// that meets the constraint so far, once there is one.
	EventTrial = "trial"
	// EventStudy is the end of the study's trials: done, complete, pruned, failed.
	EventStudy = "study"
)

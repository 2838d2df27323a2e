package eval

// Metrics are the raw measurements of one candidate model: what an objective scores and
// what a study stores, so that reports can re-score without retraining.
type Metrics struct {
	Accuracy float64 `json:"accuracy"` // validation accuracy in [0, 1]
	Loss     float64 `json:"loss"`     // validation cross-entropy
	Latency  Latency `json:"latency"`  // measured forward-pass latency of the candidate
	// RelLatency is the candidate's latency divided by the dense model's, measured
	// interleaved (A B A B ...) so that machine drift cancels; 0 when unknown.
	RelLatency float64 `json:"rel_latency"`
	// RelSpread is how precisely RelLatency is known: the relative half-width of its 95 %
	// interval (0.02 for ±2 %); 0 for an exact meter or when unknown.
	RelSpread float64 `json:"rel_spread,omitempty"`
	MACs      int64   `json:"macs"`   // multiply-adds per sample
	Params    int     `json:"params"` // parameters
	Bytes     int64   `json:"bytes"`  // model file size
}

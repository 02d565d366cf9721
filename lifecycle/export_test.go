package lifecycle

// SetHook sets the function called around every step and phase of l's
// runs: step, direction ("apply" or "remove") and when ("before" or
// "after" the step's method).
func SetHook(l *Lifecycle, fn func(step, dir, when string)) { l.hook = fn }

// EncodeRequest is encodeRequest, for tests.
var EncodeRequest = encodeRequest

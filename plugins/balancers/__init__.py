"""Built-in balancers plugins: gradient hooks between the backward pass and the optimizer step."""

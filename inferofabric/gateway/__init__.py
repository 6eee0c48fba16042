"""The request path of inference endpoints: route, measure, hold while scaling from zero."""

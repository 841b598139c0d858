"""Test helpers: tiny real ONNX bundles and generated GeoTIFFs."""

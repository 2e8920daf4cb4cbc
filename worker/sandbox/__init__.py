"""HTTP simulators of Oracle Fusion Service and Caliq, for tests, the demo and the benchmark."""

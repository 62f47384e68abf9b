"""The simulated spinning mill: a seeded, time-warpable model and its real protocol faces.

``physics`` holds the formulas, ``mill.MillSim`` the step model, ``history.generate`` fast
historical data, ``vibration`` the waveforms and ``server.SimServer`` the Modbus / OPC UA / MQTT
faces. Nothing in the runtime packages imports this package; tests, benches and the demo do.
"""

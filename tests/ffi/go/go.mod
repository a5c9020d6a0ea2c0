module lorakit.example/ffi-host

go 1.19

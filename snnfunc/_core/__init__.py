"""What a neuron is, below any kernel (torch only): the IR a definition is traced into and
its reverse mode, the parsed definition with its step, the registry the kernels' ops look
names up in, the reset, the result types and the argument checks."""

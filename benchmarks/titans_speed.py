"""Titans: the chunked scan (dual form, chunk 16) against the sequential reference, forward +
backward, B = 32, hidden 64, one thread, best of 3 (BENCHMARKS.md "Memory cells")."""

import time

from rnnkit.nn import Recurrent
torch.set_num_threads(1); torch.manual_seed(0)
B,H=32,64
for T in (64,256):
    for depth in (1,2):
        x=torch.randn(B,T,H,requires_grad=True)
        times={}
        for strategy in ("sequential","scan"):
            torch.manual_seed(0)
            layer=Recurrent("titans",H,H,strategy=strategy,memory_depth=depth,chunk_size=16)
            def run():
                y,_=layer(x); y.sum().backward()
            run(); ts=[]
            for _ in range(3):
                t=time.perf_counter(); run(); ts.append(time.perf_counter()-t)
            times[strategy]=min(ts)
        print(f"T={T} memory_depth={depth}: sequential {times['sequential']:.3f} s, scan {times['scan']:.3f} s, {times['sequential']/times['scan']:.1f}x")

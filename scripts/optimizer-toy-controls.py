#!/usr/bin/env python3
"""The two toy controls of docs/REPRODUCTION.md section 1 (why AdamW's joint `stream` group lags and
why Lion's single-tensor groups rotate faster than their Δ* in a net). numpy only:

    python3 scripts/optimizer-toy-controls.py

The toy is `ilr calibrate`'s: scale-invariant vectors w ∈ R^1024 (4 seeds) with gradient
P⊥(w)ξ/‖w‖, stepped by AdamW (η = 1e-3, λ = 2.5) or Lion (η = 1e-4, λ = 25) at λ_e = 2.5e-3, the
recipe's, for 8 units, measured over the last 4. Δ* is the balance of src/stats/rotational.rs.
1. Preconditioner control (AdamW): one group, two blocks whose gradient scales differ 1:1, 1:3, 1:10.
2. Correlated-noise control (AdamW and Lion): ξ_t = e_t − a·e_(t−1), a = 0, 0.5, 0.9 (lag-1
   correlation 0, −0.4, −0.5), the white-noise premise of the predictions broken on purpose.
3. Signal control (AdamW and SGD at η = 0.5, λ = 5e-3): a fixed descent direction μ·e added to the
   noise, μ = 0, 0.3, 1.
"""
import math
import numpy as np


def adamw_pred(le,b1):
    r=b1*(1-le); S=r/(1-r); keep=1-le; x=(2*le-le*le)/(1+2*S)
    return math.sqrt(x*(1-x*S*S/keep**2))/(keep+x*S/keep)
def lion_pred(le,b1,b2):
    var=(1-b1)**2+b1*b1*(1-b2)/(1+b2); S=0
    for k in range(1,5000):
        cov=b1*(1-b2)*b2**(k-1)*((1-b1)+b1*b2/(1+b2)); S+=(1-le)**k*(2/math.pi)*math.asin(min(cov/var,1))
    keep=1-le; x=(2*le-le*le)/(1+2*S)
    return math.sqrt(x*(1-x*S*S/keep**2))/(keep+x*S/keep)
def run_correlated(kind, a, d=1024, seeds=4, eps=1e-8):
    rng=np.random.default_rng(2)
    if kind=='adamw': lr,wd,b1,b2=1e-3,2.5,0.9,0.999
    else: lr,wd,b1,b2=1e-4,25.0,0.9,0.99
    le=lr*wd; steps=int(8/le); frm=steps//2
    w=rng.standard_normal((seeds,d)); w/=np.linalg.norm(w,axis=1,keepdims=True)
    m=np.zeros_like(w); v=np.zeros_like(w); acc=[]; prev=rng.standard_normal((seeds,d))
    for t in range(1,steps+1):
        e=rng.standard_normal((seeds,d)); xi=e-a*prev; prev=e
        ww=(w*w).sum(1,keepdims=True)
        g=(xi-((xi*w).sum(1,keepdims=True)/ww)*w)/np.sqrt(ww)
        old=w.copy(); w=w*(1-lr*wd)
        if kind=='adamw':
            m=m+(1-b1)*(g-m); v=b2*v+(1-b2)*g*g
            w=w-lr*(m/(1-b1**t))/(np.sqrt(v/(1-b2**t))+eps)
        else:
            c=b1*m+(1-b1)*g; w=w-lr*np.sign(c); m=b2*m+(1-b2)*g
        if t>frm:
            cos=(old*w).sum(1)/np.linalg.norm(old,axis=1)/np.linalg.norm(w,axis=1)
            acc.append(np.arccos(np.clip(cos,-1,1)))
    D=np.sqrt((np.array(acc)**2).mean())
    p=adamw_pred(le,b1) if kind=='adamw' else lion_pred(le,b1,b2)
    return D/p

def run_split(scale_b, lr=1e-3, wd=2.5, b1=0.9, b2=0.999, d=1024, seeds=4, eps=1e-8):
    rng=np.random.default_rng(1); le=lr*wd; steps=int(8/le); frm=steps//2
    w=rng.standard_normal((seeds,d)); w*=math.sqrt(lr*d/(2*wd))/np.linalg.norm(w,axis=1,keepdims=True)
    D=np.ones(d); D[d//2:]=scale_b
    m=np.zeros_like(w); v=np.zeros_like(w); acc=[]; rad=[]
    for t in range(1,steps+1):
        xi=rng.standard_normal((seeds,d))*D
        ww=(w*w).sum(1,keepdims=True)
        g=(xi-((xi*w).sum(1,keepdims=True)/ww)*w)/np.sqrt(ww)
        old=w.copy(); w=w*(1-lr*wd)
        m=m+(1-b1)*(g-m); v=b2*v+(1-b2)*g*g
        u=(m/(1-b1**t))/(np.sqrt(v/(1-b2**t))+eps)
        w=w-lr*u
        if t>frm:
            cos=(old*w).sum(1)/np.linalg.norm(old,axis=1)/np.linalg.norm(w,axis=1)
            acc.append(np.arccos(np.clip(cos,-1,1)))
            rad.append(((u*old).sum(1)/np.linalg.norm(u,axis=1)/np.linalg.norm(old,axis=1)).mean())
    D_=np.sqrt((np.array(acc)**2).mean())
    return D_/adamw_pred(le,b1), np.mean(rad)

def run_signal(kind, mu, d=1024, seeds=4, eps=1e-8):
    rng=np.random.default_rng(3)
    if kind=='adamw': lr,wd,b1,b2=1e-3,2.5,0.9,0.999
    else: lr,wd=0.5,5e-3
    le=lr*wd; steps=int(8/le); frm=steps//2
    w=rng.standard_normal((seeds,d)); w/=np.linalg.norm(w,axis=1,keepdims=True)
    e=rng.standard_normal((seeds,d))  # a fixed direction the loss descends along (a persistent signal)
    m=np.zeros_like(w); v=np.zeros_like(w); acc=[]
    for t in range(1,steps+1):
        xi=rng.standard_normal((seeds,d))+mu*e
        ww=(w*w).sum(1,keepdims=True)
        g=(xi-((xi*w).sum(1,keepdims=True)/ww)*w)/np.sqrt(ww)
        old=w.copy()
        if kind=='adamw':
            w=w*(1-lr*wd); m=m+(1-b1)*(g-m); v=b2*v+(1-b2)*g*g
            w=w-lr*(m/(1-b1**t))/(np.sqrt(v/(1-b2**t))+eps)
        else:
            w=w-lr*(g+wd*w)
        if t>frm:
            cos=(old*w).sum(1)/np.linalg.norm(old,axis=1)/np.linalg.norm(w,axis=1)
            acc.append(np.arccos(np.clip(cos,-1,1)))
    D=np.sqrt((np.array(acc)**2).mean())
    p=adamw_pred(le,b1) if kind=='adamw' else math.sqrt(2*le)
    return D/p


if __name__ == "__main__":
    for sb in [1.0, 3.0, 10.0]:
        r, rad = run_split(sb)
        print(f"adamw, one group in two blocks with gradient scales 1:{sb:g}: RMS Δ/Δ* = {r:.3f}, "
              f"mean cos(u, w) = {rad:.4f}", flush=True)
    for kind in ["adamw", "lion"]:
        for a in [0.0, 0.5, 0.9]:
            r = run_correlated(kind, a)
            print(f"{kind}, noise e_t − {a}·e_(t−1) (lag-1 correlation {-a / (1 + a * a):.2f}): "
                  f"RMS Δ/Δ* = {r:.3f}", flush=True)
    for kind in ["adamw", "sgd"]:
        for mu in [0.0, 0.3, 1.0]:
            print(f"{kind}, noise + {mu}·(a fixed direction): RMS Δ/Δ* = {run_signal(kind, mu):.3f}", flush=True)

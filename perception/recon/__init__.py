"""3D reconstruction with test-time training (issue 18, DESIGN.md section 6, tttLRM): calibrated views in, one point
per pixel of any query camera out, cross-view layers whose fast weights are written from the input views.

    model = ReconModel(ReconConfig())                  # or load_recon(checkpoint_dir)
    out = model(views_from_frames(frames), queries)    # all views at once; chunk_views=4 streams them
    state = model.update(model.init_state(1), chunk)   # streaming by hand; model.query(state, cameras)
"""

from perception.recon.cameras import Cameras, Views, pixel_rays, plucker_rays, views_from_frames
from perception.recon.checkpoint import load_recon, save_recon
from perception.recon.config import ReconConfig
from perception.recon.lact import FastWeights, LaCTLayer, inner_gradients, lact_update, newton_schulz
from perception.recon.loss import recon_loss, z_to_ray_depth
from perception.recon.model import ReconModel, ReconOutput, ReconState, forward_flops
from perception.recon.render import Rendered, render_output, splat_points

__all__ = ["Cameras", "FastWeights", "LaCTLayer", "ReconConfig", "ReconModel", "ReconOutput", "ReconState",
           "Rendered", "Views", "forward_flops", "inner_gradients", "lact_update", "load_recon", "newton_schulz",
           "pixel_rays", "plucker_rays", "recon_loss", "render_output", "save_recon", "splat_points",
           "views_from_frames", "z_to_ray_depth"]

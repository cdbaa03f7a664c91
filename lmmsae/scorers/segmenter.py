"""Segment what a label names in an image: Grounding-DINO boxes, then SAM masks inside them (the paper's).

Loaded through transformers only when an IoU scorer meets an image without ground-truth masks.
Any checkpoint of the two architectures works (a hub id or a local folder): by default
IDEA-Research/grounding-dino-tiny and facebook/sam-vit-base. Box threshold 0.3 as in the paper.
"""

from __future__ import annotations

import numpy as np

from lmmsae.errors import UserError


class GroundingSam:
    """`region(image, label)` -> bool HxW union of SAM masks of every box Grounding-DINO finds for the label."""

    def __init__(self, detector: str, sam: str, box_threshold: float = 0.3, text_threshold: float = 0.25,
                 device: str = "cpu"):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, SamModel, SamProcessor

        try:
            self.det_processor = AutoProcessor.from_pretrained(detector)
            self.detector = AutoModelForZeroShotObjectDetection.from_pretrained(detector).to(device).eval()
            self.sam_processor = SamProcessor.from_pretrained(sam)
            self.sam = SamModel.from_pretrained(sam).to(device).eval()
        except OSError as exc:
            raise UserError(f"cannot load the IoU segmenter ({detector!r}, {sam!r}): {str(exc).splitlines()[0]}; "
                            f"set -o scorers.N.detector=... and -o scorers.N.sam=... to local folders") from None
        self.box_threshold = box_threshold
        self.text_threshold = text_threshold
        self.device = device
        self.identity = {"detector": detector, "sam": sam, "box_threshold": box_threshold}

    def boxes(self, image, label: str) -> np.ndarray:
        """[n, 4] boxes (x0, y0, x1, y1, pixels) where the detector finds the label."""
        import torch

        text = label.lower().strip().rstrip(".") + "."
        inputs = self.det_processor(images=image, text=text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            outputs = self.detector(**inputs)
        result = self.det_processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=self.box_threshold, text_threshold=self.text_threshold,
            target_sizes=[image.size[::-1]])[0]
        return result["boxes"].detach().cpu().numpy().reshape(-1, 4)

    def region(self, image, label: str) -> np.ndarray:
        """Union of SAM masks over the detected boxes; all False when nothing is detected."""
        import torch

        image = image.convert("RGB")
        boxes = self.boxes(image, label)
        if len(boxes) == 0:
            return np.zeros(image.size[::-1], dtype=bool)
        inputs = self.sam_processor(image, input_boxes=[boxes.tolist()], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.sam(**inputs, multimask_output=False)
        masks = self.sam_processor.post_process_masks(
            out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0]
        return masks.reshape(-1, *masks.shape[-2:]).any(dim=0).numpy().astype(bool)
